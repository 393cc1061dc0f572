mod pacman;
mod publish;
mod support;
mod upstream;
