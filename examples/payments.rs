//! A payments participant for sagad, written with tonic: copy it to write your own.
//!
//! ```sh
//! cargo run --example payments                      # listens on 127.0.0.1:7002
//! cargo run --example payments -- --listen :7010    # or PAYMENTS_LISTEN=...
//! ```
//!
//! It serves `shop.Payments` (`examples/proto/shop/payments.proto`), two methods
//! over sagad's `StepRequest`/`StepResponse`, registered as a participant:
//!
//! ```sh
//! sagad participants register payments \
//!     --forward    http://127.0.0.1:7002/shop.Payments/Charge \
//!     --compensate http://127.0.0.1:7002/shop.Payments/Refund
//! ```
//!
//! What every participant must do, and where this one does it:
//! - **Dedupe on the idempotency key.** sagad may repeat a call whose answer was
//!   lost (a timeout, a coordinator restart). The first final answer to a key is
//!   stored and every repeat gets it back, so a card is charged at most once.
//! - **Treat an unknown key in a compensation as nothing to undo.** A refund may
//!   arrive for a charge that never happened (the charge call never got here):
//!   answer OK, undo nothing.
//! - **Say no with `OUTCOME_REJECTED`** (a declined card: never retried) and
//!   "try later" with `OUTCOME_RETRY` or an error status (retried with backoff).
//!
//! The payload steers it: `{"order_id": "B-7", "amount_cents": 1250}` charges
//! 12.50; `"card": "declined"` is rejected; `"card": "flaky"` asks for a retry
//! on the first attempt, to show sagad's backoff.
//!
//! State lives in memory here; a real service keeps its ledger and the stored
//! answers in its own database, in the same transaction as the charge.

use std::{collections::HashMap, net::SocketAddr, sync::Mutex, time::Duration};

use clap::Parser;
use sagad::proto::v1::{Outcome, StepRequest, StepResponse};
use tonic::{Request, Response, Status};

/// The code generated from `payments.proto` by the crate's build script.
mod shop {
    include!(concat!(env!("OUT_DIR"), "/shop/shop.rs"));
}

use shop::payments_server::{Payments, PaymentsServer};

/// Charged when the payload names no amount.
const DEFAULT_AMOUNT_CENTS: u64 = 1999;
/// How long a flaky card asks sagad to wait before the next attempt.
const FLAKY_RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Parser)]
#[command(about = "An example sagad participant: charges and refunds cards")]
struct Args {
    /// Address to listen on (host:port, or :port for loopback).
    #[arg(long, env = "PAYMENTS_LISTEN", default_value = "127.0.0.1:7002")]
    listen: String,
}

/// One charge that has not been refunded.
struct Charge {
    id: String,
    amount_cents: u64,
}

/// Everything the service remembers.
#[derive(Default)]
struct Ledger {
    /// The final answer given to each idempotency key, replayed on repeats.
    answers: HashMap<String, StepResponse>,
    /// Live charges by (saga, step): what a refund undoes. The refund's key
    /// differs from the charge's (it names the action), so it is matched by
    /// saga and step.
    charges: HashMap<(String, String), Charge>,
    /// The number of the next charge id.
    next_charge: u64,
    /// (saga, step) whose refund came before any charge ("nothing to undo"): a
    /// charge that arrives later (a delayed retry) must not take the money.
    refunded_first: std::collections::HashSet<(String, String)>,
}

struct PaymentsService {
    /// A std mutex: never held across an await.
    ledger: Mutex<Ledger>,
}

/// The payload fields this service reads.
#[derive(serde::Deserialize)]
struct Order {
    #[serde(default)]
    order_id: String,
    #[serde(default)]
    amount_cents: Option<u64>,
    #[serde(default)]
    card: Option<String>,
}

fn done(output: serde_json::Value) -> StepResponse {
    StepResponse {
        outcome: Outcome::Succeeded as i32,
        output: output.to_string().into_bytes(),
        ..Default::default()
    }
}

fn rejected(reason: impl Into<String>) -> StepResponse {
    StepResponse {
        outcome: Outcome::Rejected as i32,
        reason: reason.into(),
        ..Default::default()
    }
}

impl PaymentsService {
    fn charge(&self, request: &StepRequest) -> StepResponse {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(answer) = ledger.answers.get(&request.idempotency_key) {
            println!(
                "charge  {}  repeat of a key already answered",
                request.saga_id
            );
            return answer.clone();
        }
        let step = (request.saga_id.clone(), request.step.clone());
        let answer = match serde_json::from_slice::<Order>(&request.payload) {
            _ if ledger.refunded_first.contains(&step) => {
                rejected("this payment was already cancelled by the saga: not charging")
            }
            Err(e) => rejected(format!("the payload is not an order: {e}")),
            Ok(order) if order.card.as_deref() == Some("declined") => {
                rejected("card declined by the issuer")
            }
            Ok(order) if order.card.as_deref() == Some("flaky") && request.attempt == 1 => {
                println!(
                    "charge  {}  attempt 1: issuer busy, asking for a retry",
                    request.saga_id
                );
                // A transient answer is not stored: the next attempt, with the
                // same key, must get a fresh try.
                return StepResponse {
                    outcome: Outcome::Retry as i32,
                    reason: "the card issuer is busy".into(),
                    retry_after: prost_types::Duration::try_from(FLAKY_RETRY_AFTER).ok(),
                    ..Default::default()
                };
            }
            Ok(order) => {
                ledger.next_charge += 1;
                let charge = Charge {
                    id: format!("ch_{}", ledger.next_charge),
                    amount_cents: order.amount_cents.unwrap_or(DEFAULT_AMOUNT_CENTS),
                };
                let answer = done(serde_json::json!({
                    "charge_id": charge.id,
                    "order_id": order.order_id,
                    "amount_cents": charge.amount_cents,
                }));
                ledger
                    .charges
                    .insert((request.saga_id.clone(), request.step.clone()), charge);
                answer
            }
        };
        println!(
            "charge  {}  attempt {}: {}",
            request.saga_id,
            request.attempt,
            describe(&answer)
        );
        ledger
            .answers
            .insert(request.idempotency_key.clone(), answer.clone());
        answer
    }

    fn refund(&self, request: &StepRequest) -> StepResponse {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(answer) = ledger.answers.get(&request.idempotency_key) {
            println!(
                "refund  {}  repeat of a key already answered",
                request.saga_id
            );
            return answer.clone();
        }
        let key = (request.saga_id.clone(), request.step.clone());
        let answer = match ledger.charges.remove(&key) {
            Some(charge) => {
                println!(
                    "refund  {}  refunded {} ({}.{:02})",
                    request.saga_id,
                    charge.id,
                    charge.amount_cents / 100,
                    charge.amount_cents % 100
                );
                done(serde_json::json!({ "refunded": charge.id }))
            }
            None => {
                // The charge never arrived (or was declined): nothing to undo,
                // and still OK, or the saga could never finish compensating.
                ledger.refunded_first.insert(key);
                println!(
                    "refund  {}  no charge for this saga: nothing to undo",
                    request.saga_id
                );
                done(serde_json::json!({ "refunded": null }))
            }
        };
        ledger
            .answers
            .insert(request.idempotency_key.clone(), answer.clone());
        answer
    }
}

/// A charge answer in a few words, for the log.
fn describe(answer: &StepResponse) -> String {
    if answer.outcome == Outcome::Rejected as i32 {
        format!("rejected ({})", answer.reason)
    } else {
        format!("charged {}", String::from_utf8_lossy(&answer.output))
    }
}

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn charge(
        &self,
        request: Request<StepRequest>,
    ) -> Result<Response<StepResponse>, Status> {
        Ok(Response::new(PaymentsService::charge(
            self,
            request.get_ref(),
        )))
    }

    async fn refund(
        &self,
        request: Request<StepRequest>,
    ) -> Result<Response<StepResponse>, Status> {
        Ok(Response::new(PaymentsService::refund(
            self,
            request.get_ref(),
        )))
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("127.0.0.1{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .map_err(|_| format!("--listen '{text}' is not host:port (e.g. 127.0.0.1:7002)"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let addr = parse_listen(&args.listen)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    println!("payments listening on {addr}");
    println!(
        "register it:  sagad participants register payments \
         --forward http://{addr}/shop.Payments/Charge --compensate http://{addr}/shop.Payments/Refund"
    );
    let service = PaymentsService {
        ledger: Mutex::new(Ledger::default()),
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(PaymentsServer::new(service))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("payments stopped");
    Ok(())
}
