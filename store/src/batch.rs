//! Group commit for the stores that keep blocks elsewhere: every `put_file` of a small file
//! queues its part, and whoever finds no batch on its way sends everything queued (up to a
//! limit) in one call to the node or cluster, while the others wait for that answer. Each
//! caller still returns only once its own part is committed: the batch only shares the
//! cost of a call (and of a pin: see [`crate::kubo`]) between the files waiting beside each
//! other. A batch runs as a task of its own: a caller cancelled while its batch is on the
//! way (a sync stopped by a signal) cannot leave the others' parts half sent.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// An answer for every part of a batch: its error, written out (one error for all).
pub(crate) type Answer = std::result::Result<(), String>;

/// Queued parts of type `T` and who sends them next.
pub(crate) struct GroupCommit<T> {
    queue: Mutex<Vec<Queued<T>>>,
    sending: Arc<tokio::sync::Mutex<()>>,
    max_items: usize,
    max_bytes: usize,
}

struct Queued<T> {
    item: T,
    bytes: usize,
    done: oneshot::Sender<Answer>,
}

impl<T: Send + 'static> GroupCommit<T> {
    /// Batches of at most `max_items` parts and `max_bytes` (one larger part goes alone).
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        GroupCommit {
            queue: Mutex::new(Vec::new()),
            sending: Arc::new(tokio::sync::Mutex::new(())),
            max_items: max_items.max(1),
            max_bytes,
        }
    }

    /// Queues `item` (`bytes` long) and returns once a batch holding it was sent with
    /// `send`, with that batch's answer; `None` if the batch was dropped unsent (its sender
    /// was cancelled).
    pub async fn submit<F, Fut>(&self, item: T, bytes: usize, send: F) -> Option<Answer>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        let (done, mut answer) = oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Queued { item, bytes, done });
        loop {
            let turn = tokio::select! {
                biased;
                r = &mut answer => return r.ok(),
                g = Arc::clone(&self.sending).lock_owned() => g,
            };
            // Sent by the batch before ours?
            match answer.try_recv() {
                Ok(r) => return Some(r),
                Err(oneshot::error::TryRecvError::Closed) => return None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let (items, waiting): (Vec<T>, Vec<oneshot::Sender<Answer>>) =
                self.take().into_iter().map(|q| (q.item, q.done)).unzip();
            // The batch, its answers and the turn go to a task of their own.
            let batch = send(items);
            let task = tokio::spawn(async move {
                let result = batch.await;
                for w in waiting {
                    let _ = w.send(result.clone());
                }
                drop(turn);
            });
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a batch's task failed");
            }
        }
    }

    /// The parts queued first, within the limits (at least one).
    fn take(&self) -> Vec<Queued<T>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut bytes = 0;
        let mut n = 0;
        for q in queue.iter() {
            if n > 0 && (n == self.max_items || bytes + q.bytes > self.max_bytes) {
                break;
            }
            bytes += q.bytes;
            n += 1;
        }
        queue.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_waiting_together_go_in_one_batch_and_share_its_answer() {
        let g = Arc::new(GroupCommit::<u32>::new(8, 1000));
        let calls = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..20u32)
            .map(|i| {
                let (g, calls, sizes) = (g.clone(), calls.clone(), sizes.clone());
                tokio::spawn(async move {
                    g.submit(i, 10, |items: Vec<u32>| {
                        let (calls, sizes) = (calls.clone(), sizes.clone());
                        async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            sizes.lock().unwrap().push(items.len());
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            if items.contains(&13) {
                                Err("13 is refused".to_string())
                            } else {
                                Ok(())
                            }
                        }
                    })
                    .await
                })
            })
            .collect();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    assert_eq!(e, "13 is refused");
                    refused += 1;
                }
                None => panic!("a batch was dropped"),
            }
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(
            sizes.iter().sum::<usize>(),
            20,
            "every part sent once: {sizes:?}"
        );
        assert!(sizes.iter().all(|&n| n <= 8), "within the limit: {sizes:?}");
        assert!(calls.load(Ordering::SeqCst) < 20, "batched: {sizes:?}");
        assert!(
            (1..=8).contains(&refused),
            "the refused batch's parts all fail: {refused}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_caller_does_not_cut_its_batch_short() {
        let g = Arc::new(GroupCommit::<u32>::new(8, 1000));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let send = |sent: Arc<Mutex<Vec<u32>>>| {
            move |items: Vec<u32>| {
                let sent = sent.clone();
                async move {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    sent.lock().unwrap().extend(items);
                    Ok(())
                }
            }
        };
        let (g1, s1) = (g.clone(), sent.clone());
        let first = tokio::spawn(async move { g1.submit(1, 1, send(s1)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Queued behind the first batch, which is on its way.
        let (g2, s2) = (g.clone(), sent.clone());
        let second = tokio::spawn(async move { g2.submit(2, 1, send(s2)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        first.abort();
        assert_eq!(second.await.unwrap(), Some(Ok(())));
        let mut got = sent.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![1, 2], "the cancelled caller's batch went whole");
    }

    #[test]
    fn a_batch_stops_at_the_byte_limit_but_takes_at_least_one() {
        let g = GroupCommit::<u32>::new(10, 100);
        for (i, b) in [(1, 60), (2, 50), (3, 500)] {
            g.queue.lock().unwrap().push(Queued {
                item: i,
                bytes: b,
                done: oneshot::channel().0,
            });
        }
        let take = |g: &GroupCommit<u32>| g.take().into_iter().map(|q| q.item).collect::<Vec<_>>();
        assert_eq!(take(&g), vec![1]);
        assert_eq!(take(&g), vec![2]);
        assert_eq!(take(&g), vec![3], "one part over the limit goes alone");
        assert!(take(&g).is_empty());
    }
}
