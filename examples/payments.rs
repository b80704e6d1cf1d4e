//! A payments participant for sagad, written on the participant SDK
//! (`sagad::sdk`): copy it to write your own.
//!
//! ```sh
//! cargo run --example payments                      # gRPC on 127.0.0.1:7002
//! cargo run --example payments -- --listen :7010    # or PAYMENTS_LISTEN=...
//! cargo run --example payments -- --http-listen :7003   # HTTP/JSON too
//! ```
//!
//! It serves `shop.Payments` (`examples/proto/shop/payments.proto`, two
//! methods over sagad's `StepRequest`/`StepResponse`), registered as:
//!
//! ```sh
//! sagad participants register payments \
//!     --forward    http://127.0.0.1:7002/shop.Payments/Charge \
//!     --compensate http://127.0.0.1:7002/shop.Payments/Refund
//! ```
//!
//! and, with `--http-listen`, the same handlers over HTTP/JSON
//! (`--protocol http --forward http://127.0.0.1:7003/forward --compensate
//! http://127.0.0.1:7003/compensate`).
//!
//! The author writes two handlers; the SDK's barrier does what every
//! participant must (docs/participant.md): each charge and refund is written
//! through `tx`, in the same sled transaction as the barrier's record of the
//! call, so a repeated call gets the first answer and charges nothing more, a
//! refund whose charge never came is "nothing to undo" (the refund handler
//! does not even run), and a charge arriving after its refund is rejected.
//!
//! The payload steers it: `{"order_id": "B-7", "amount_cents": 1250}` charges
//! 12.50; `"card": "declined"` is rejected; `"card": "flaky"` asks for a retry
//! on the first attempt, to show sagad's backoff.

use std::{net::SocketAddr, time::Duration};

use async_trait::async_trait;
use clap::Parser;
use sagad::{
    proto::v1::{StepRequest, StepResponse},
    sdk::{Action, Handler, Output, Participant, Reject, Request, SledBarrier, SledTx},
};
use serde::{Deserialize, Serialize};
use tonic::{Response, Status};

/// The code generated from `payments.proto` by the crate's build script.
mod shop {
    include!(concat!(env!("OUT_DIR"), "/shop/shop.rs"));
}

use shop::payments_server::{Payments, PaymentsServer};

/// Charged when the payload names no amount.
const DEFAULT_AMOUNT_CENTS: u64 = 1999;
/// How long a flaky card asks sagad to wait before the next attempt.
const FLAKY_RETRY_AFTER: Duration = Duration::from_millis(500);
/// The key of the last charge number (shared by every saga: the barrier's
/// optimistic commit makes two charges at once take different numbers).
const LAST_CHARGE: &str = "last-charge";

#[derive(Parser)]
#[command(about = "An example sagad participant: charges and refunds cards")]
struct Args {
    /// Address to serve gRPC on (host:port, or :port for loopback).
    #[arg(long, env = "PAYMENTS_LISTEN", default_value = "127.0.0.1:7002")]
    listen: String,
    /// Also serve HTTP/JSON here.
    #[arg(long, env = "PAYMENTS_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// The directory of the charges and the barrier (a sled database).
    #[arg(long, env = "PAYMENTS_DB", default_value = "payments-db")]
    db: std::path::PathBuf,
}

/// The payload fields this service reads.
#[derive(Deserialize)]
struct Order {
    #[serde(default)]
    order_id: String,
    #[serde(default)]
    amount_cents: Option<u64>,
    #[serde(default)]
    card: Option<String>,
}

/// One charge, kept under `charge/<saga>/<step>`.
#[derive(Serialize, Deserialize)]
struct Charge {
    id: String,
    amount_cents: u64,
    refunded: bool,
}

struct Cards;

fn charge_key(request: &Request) -> String {
    format!("charge/{}/{}", request.saga_id, request.step)
}

#[async_trait]
impl Handler<SledBarrier> for Cards {
    async fn forward(&self, request: &Request, tx: &mut SledTx<'_>) -> Result<Output, Reject> {
        let order: Order = request
            .payload_json()
            .map_err(|e| Reject::rejected(format!("the payload is not an order: {e}")))?;
        match order.card.as_deref() {
            Some("declined") => return Err(Reject::rejected("card declined by the issuer")),
            Some("flaky") if request.attempt == 1 => {
                println!(
                    "charge  {}  attempt 1: issuer busy, asking for a retry",
                    request.saga_id
                );
                return Err(Reject::retry_after(
                    "the card issuer is busy",
                    FLAKY_RETRY_AFTER,
                ));
            }
            _ => {}
        }
        let last = tx
            .get(LAST_CHARGE)?
            .map_or(0, |b| String::from_utf8_lossy(&b).parse().unwrap_or(0));
        let charge = Charge {
            id: format!("ch_{}", last + 1),
            amount_cents: order.amount_cents.unwrap_or(DEFAULT_AMOUNT_CENTS),
            refunded: false,
        };
        tx.insert(LAST_CHARGE, (last + 1).to_string());
        tx.insert(
            charge_key(request),
            serde_json::to_vec(&charge).expect("a charge serialises"),
        );
        println!("charge  {}  charged {}", request.saga_id, charge.id);
        Ok(Output::json(&serde_json::json!({
            "charge_id": charge.id,
            "order_id": order.order_id,
            "amount_cents": charge.amount_cents,
        })))
    }

    async fn compensate(&self, request: &Request, tx: &mut SledTx<'_>) -> Result<(), Reject> {
        // The barrier runs this only after this step's charge succeeded here.
        let key = charge_key(request);
        let Some(bytes) = tx.get(&key)? else {
            return Ok(());
        };
        let mut charge: Charge = serde_json::from_slice(&bytes)
            .map_err(|e| Reject::retry(format!("charge {key} cannot be read: {e}")))?;
        charge.refunded = true;
        tx.insert(
            key,
            serde_json::to_vec(&charge).expect("a charge serialises"),
        );
        println!(
            "refund  {}  refunded {} ({}.{:02})",
            request.saga_id,
            charge.id,
            charge.amount_cents / 100,
            charge.amount_cents % 100
        );
        Ok(())
    }
}

/// `shop.Payments` answered by the SDK: each method names its action.
struct PaymentsService(Participant<SledBarrier, Cards>);

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn charge(
        &self,
        request: tonic::Request<StepRequest>,
    ) -> Result<Response<StepResponse>, Status> {
        self.0.answer_grpc(request, Action::Forward).await
    }

    async fn refund(
        &self,
        request: tonic::Request<StepRequest>,
    ) -> Result<Response<StepResponse>, Status> {
        self.0.answer_grpc(request, Action::Compensate).await
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let full = if text.starts_with(':') {
        format!("127.0.0.1{text}")
    } else {
        text.to_string()
    };
    full.parse()
        .map_err(|_| format!("'{text}' is not host:port (e.g. 127.0.0.1:7002)"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let participant = Participant::new(SledBarrier::open(&args.db)?, Cards);
    let listener = tokio::net::TcpListener::bind(parse_listen(&args.listen)?).await?;
    let addr = listener.local_addr()?;
    println!(
        "payments listening on {addr} (gRPC), barrier in {}",
        args.db.display()
    );
    println!(
        "register it:  sagad participants register payments \
         --forward http://{addr}/shop.Payments/Charge --compensate http://{addr}/shop.Payments/Refund"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let http = match &args.http_listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(parse_listen(listen)?).await?;
            let http = listener.local_addr()?;
            println!(
                "payments listening on {http} (HTTP/JSON): --protocol http \
                 --forward http://{http}/forward --compensate http://{http}/compensate"
            );
            let router = participant.router();
            let stopped = stop.clone().cancelled_owned();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }))
        }
        None => None,
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(PaymentsServer::new(PaymentsService(participant)))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    stop.cancel();
    if let Some(http) = http {
        http.await??;
    }
    println!("payments stopped");
    Ok(())
}
