//! The customers: clients that place orders over the order service's HTTP
//! endpoint, as a shop's front end would, at a rate or as fast as they go.
//! A refused or unanswered request is sent again with the same order id —
//! the endpoint answers a repeat with the first order — so an order the
//! service accepted is never lost and never doubled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::model::{self, Order};
use crate::splitmix;

/// What the customers order.
#[derive(Clone, Debug)]
pub struct Mix {
    /// Share of orders, in percent, paid with a card the gateway declines.
    pub decline_percent: u32,
    /// Share of orders in a currency the gateway does not settle (poison).
    pub poison_percent: u32,
    /// Ids are `<run>-<n>`, so runs on one store do not collide.
    pub run: String,
    /// The seed of the choices.
    pub seed: u64,
}

impl Mix {
    /// Order `n` of the run.
    pub fn order(&self, n: usize) -> Order {
        let roll = splitmix(self.seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let percent = (roll % 100) as u32;
        let (currency, token) = if percent < self.poison_percent {
            ("XTS", model::TOKEN_VISA)
        } else if percent < self.poison_percent + self.decline_percent {
            ("EUR", model::TOKEN_DECLINED)
        } else {
            ("EUR", model::TOKEN_VISA)
        };
        let quantity = 1 + ((roll >> 8) % 3) as u32;
        Order {
            order: format!("{}-{n}", self.run),
            customer: format!("customer-{}", (roll >> 16) % 50),
            sku: format!("sku-{}", (roll >> 24) % 8),
            quantity,
            cents: u64::from(quantity) * (500 + (roll >> 32) % 9_500),
            currency: currency.into(),
            payment_token: token.into(),
        }
    }
}

/// How the customers place orders.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Orders in all.
    pub orders: usize,
    /// Orders per second, all clients together; 0 for as fast as they go.
    pub rate: u32,
    /// Clients at once, each with its own connection.
    pub clients: usize,
    /// How long one order may take to be accepted, retries included.
    pub patience: Duration,
}

/// What the customers did.
#[derive(Debug, Default)]
pub struct Placed {
    /// The orders accepted, in no particular order.
    pub orders: Vec<Order>,
    /// Requests sent again after a refusal or a broken connection.
    pub retries: usize,
}

/// Places `options.orders` orders of `mix` at the endpoint `addr`.
pub async fn place(addr: SocketAddr, mix: Mix, options: LoadOptions) -> anyhow::Result<Placed> {
    let next = Arc::new(AtomicUsize::new(0));
    let placed = Arc::new(Mutex::new(Placed::default()));
    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..options.clients.max(1) {
        let (next, placed, mix, options) = (
            Arc::clone(&next),
            Arc::clone(&placed),
            mix.clone(),
            options.clone(),
        );
        clients.spawn(async move {
            let mut connection = None;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= options.orders {
                    return Ok::<(), anyhow::Error>(());
                }
                if options.rate > 0 {
                    let due = start + Duration::from_secs_f64(n as f64 / f64::from(options.rate));
                    tokio::time::sleep_until(due.into()).await;
                }
                let order = mix.order(n);
                let body = Bytes::from(serde_json::to_vec(&order)?);
                let deadline = Instant::now() + options.patience;
                let mut retries = 0;
                loop {
                    match send(&mut connection, addr, "POST", "/orders", body.clone()).await {
                        Ok((200 | 201, _)) => break,
                        Ok((status @ 400..=499, text)) => {
                            bail!("order {} refused with {status}: {text}", order.order)
                        }
                        Ok((status, text)) if Instant::now() >= deadline => {
                            bail!("order {} still refused with {status}: {text}", order.order)
                        }
                        Err(e) if Instant::now() >= deadline => {
                            return Err(e.context(format!("placing order {}", order.order)))
                        }
                        _ => {
                            connection = None;
                            retries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                let mut placed = placed.lock().expect("placed lock");
                placed.orders.push(order);
                placed.retries += retries;
            }
        });
    }
    while let Some(result) = clients.join_next().await {
        result.context("a client task failed")??;
    }
    let placed = std::mem::take(&mut *placed.lock().expect("placed lock"));
    Ok(placed)
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// `GET path` at `addr` on a connection of its own: the status and the
/// body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    send(&mut None, addr, "GET", path, Bytes::new()).await
}

/// Sends one request on the client's connection (opening one when it has
/// none): the status and the body.
async fn send(
    connection: &mut Option<Sender>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<(u16, String)> {
    if connection.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *connection = Some(sender);
    }
    let sender = connection.as_mut().expect("opened above");
    sender.ready().await?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let text = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::expected_outcome;

    #[test]
    fn the_mix_orders_the_shares_it_is_given_with_distinct_ids() {
        let mix = Mix {
            decline_percent: 20,
            poison_percent: 10,
            run: "r".into(),
            seed: 7,
        };
        let orders: Vec<Order> = (0..2000).map(|n| mix.order(n)).collect();
        let share = |outcome: &str| {
            orders
                .iter()
                .filter(|o| expected_outcome(o) == outcome)
                .count()
        };
        // 200 and 400 expected; the dice give a few percent either way.
        assert!((150..250).contains(&share(model::ORDER_REJECTED)));
        assert!((330..470).contains(&share(model::ORDER_CANCELLED)));
        let ids: std::collections::HashSet<_> = orders.iter().map(|o| &o.order).collect();
        assert_eq!(ids.len(), orders.len());
        assert!(orders.iter().all(|o| model::valid_order_id(&o.order)));
    }
}
