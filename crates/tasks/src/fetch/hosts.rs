//! The per-host limit of one worker: a semaphore per `host:port`, created
//! on first use and dropped when no request holds or awaits it, so a crawl
//! over millions of hosts does not keep millions of semaphores.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use tokio::sync::Semaphore;

type Semaphores = Rc<RefCell<HashMap<String, Rc<Semaphore>>>>;

/// At most `limit` permits per host; the worker's event loop is one
/// thread, so `Rc<RefCell<..>>` is enough.
#[derive(Debug)]
pub(crate) struct HostLimits {
    limit: Option<usize>,
    hosts: Semaphores,
}

/// One request's slot for its host; given back on drop (also when the task
/// is cancelled by `--task-timeout`).
#[derive(Debug)]
pub(crate) struct HostPermit {
    host: String,
    semaphore: Rc<Semaphore>,
    hosts: Semaphores,
    limit: usize,
}

impl HostLimits {
    pub(crate) fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            hosts: Rc::default(),
        }
    }

    /// Waits (in FIFO order) for a slot on `host`; `None` without a limit.
    pub(crate) async fn acquire(&self, host: &str) -> Option<HostPermit> {
        let limit = self.limit?;
        let semaphore = self
            .hosts
            .borrow_mut()
            .entry(host.to_string())
            .or_insert_with(|| Rc::new(Semaphore::new(limit)))
            .clone();
        // The semaphore is never closed, so acquiring cannot fail; the
        // permit is forgotten and given back by `HostPermit::drop`, which
        // lets the permit outlive this borrow of the semaphore.
        semaphore
            .acquire()
            .await
            .expect("host semaphores are never closed")
            .forget();
        Some(HostPermit {
            host: host.to_string(),
            semaphore,
            hosts: self.hosts.clone(),
            limit,
        })
    }

    #[cfg(test)]
    fn tracked_hosts(&self) -> usize {
        self.hosts.borrow().len()
    }
}

impl Drop for HostPermit {
    fn drop(&mut self) {
        self.semaphore.add_permits(1);
        // Only the map and this permit know the semaphore: nobody holds or
        // awaits a slot on this host any more.
        if Rc::strong_count(&self.semaphore) == 2
            && self.semaphore.available_permits() == self.limit
        {
            self.hosts.borrow_mut().remove(&self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::time::Duration;

    #[test]
    fn at_most_limit_in_flight_per_host_and_idle_hosts_are_forgotten() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let limits = Rc::new(HostLimits::new(Some(3)));
            let now = Rc::new(Cell::new(0usize));
            let max = Rc::new(Cell::new(0usize));
            let mut tasks = Vec::new();
            for i in 0..20 {
                let (limits, now, max) = (limits.clone(), now.clone(), max.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let host = if i % 2 == 0 { "a:80" } else { "b:80" };
                    let _permit = limits.acquire(host).await;
                    if host == "a:80" {
                        now.set(now.get() + 1);
                        max.set(max.get().max(now.get()));
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if host == "a:80" {
                        now.set(now.get() - 1);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(max.get(), 3);
            assert_eq!(limits.tracked_hosts(), 0);
        });
    }

    #[test]
    fn no_limit_means_no_permit() {
        let limits = HostLimits::new(None);
        let permit = block_on(limits.acquire("a:80"));
        assert!(permit.is_none());
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
