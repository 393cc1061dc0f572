mod aur;
mod pacman;
mod publish;
mod support;
mod upstream;
