//! A worker of your own: resolve host names to IP addresses, with a cache
//! per worker process. Build it, then run it under the supervisor:
//!
//! ```text
//! cargo build --release -p multiloop-worker --example resolve
//! printf 'localhost\nexample.com\n' |
//!     supervisor --worker target/release/examples/resolve --lines --set family=4
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use multiloop_worker::{TaskError, Worker};
use serde::{Deserialize, Serialize};

/// A line: `"example.com"`, or `{"name": "example.com"}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Name(String),
    Object { name: String },
}

#[derive(Serialize)]
struct Output {
    name: String,
    addrs: Vec<String>,
    cached: bool,
}

fn main() {
    Worker::new()
        .kind_with("resolve", |info| async move {
            // Runs once per worker process: read the settings, make the state
            // that this worker's tasks share. One thread, so no lock.
            let family = info.setting("family").unwrap_or("any").to_string();
            if !["4", "6", "any"].contains(&family.as_str()) {
                return Err(format!("setting family={family:?}: expected 4, 6 or any"));
            }
            let cache: Rc<RefCell<HashMap<String, Vec<String>>>> = Rc::default();
            Ok(move |input: Input| {
                let (cache, family) = (cache.clone(), family.clone());
                async move {
                    let (Input::Name(name) | Input::Object { name }) = input;
                    if let Some(addrs) = cache.borrow().get(&name) {
                        let addrs = addrs.clone();
                        return Ok(Output {
                            name,
                            addrs,
                            cached: true,
                        });
                    }
                    let found = tokio::net::lookup_host((name.as_str(), 0))
                        .await
                        .map_err(|e| TaskError::failed(format!("cannot resolve {name:?}: {e}")))?;
                    let mut addrs: Vec<String> = found
                        .map(|addr| addr.ip())
                        .filter(|ip| family == "any" || (family == "4") == ip.is_ipv4())
                        .map(|ip| ip.to_string())
                        .collect();
                    addrs.sort();
                    addrs.dedup();
                    cache.borrow_mut().insert(name.clone(), addrs.clone());
                    Ok::<_, TaskError>(Output {
                        name,
                        addrs,
                        cached: false,
                    })
                }
            })
        })
        .run()
}
