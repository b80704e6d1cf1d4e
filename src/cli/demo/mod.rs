//! `sagad demo`: a coordinator on a loopback port with a fresh temporary
//! journal, the three order-fulfillment participants as real gRPC servers
//! (`shop.rs`), and three orders, each followed live through `WatchSaga` and
//! then shown as a timeline:
//!
//! 1. an order that completes;
//! 2. a declined card: `charge-payment` is rejected, `validate-order` undone;
//! 3. a carrier that stays down: `ship-order` retries run out, every done step
//!    is undone.
//!
//! `--http` serves the participants over HTTP/JSON instead (`http.rs`), and
//! the same three orders end the same way.
//!
//! `--serve` then keeps everything running and prints client commands to try,
//! with the address, until Ctrl-C. Without it the demo exits 0 on its own, and
//! non-zero if any order ends other than as described.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::Context;
use sagad::{
    config::parse_listen,
    engine::EngineConfig,
    proto::v1::{self as pb, coordinator_client::CoordinatorClient},
    saga::definition,
    server::{self, ServerConfig},
};
use tokio_stream::StreamExt;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::transport::Channel;

use crate::cli::{
    output::{Palette, Tone, saga_state_name, step_state_name, tone_of},
    render,
    saga::is_terminal_event,
};

mod http;
mod shop;

use shop::Role;

const ORDER_FULFILLMENT: &str = include_str!("../../../sagas/order-fulfillment.toml");
/// Attempts per step in the demo: few and fast, so retries run out in a second.
const DEMO_MAX_ATTEMPTS: u32 = 4;
const DEMO_INITIAL_INTERVAL: Duration = Duration::from_millis(100);
/// Per-call timeout of the demo participants (above the largest `delay_ms`).
const DEMO_TIMEOUT: Duration = Duration::from_secs(5);

/// `sagad demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// After the three orders, keep the coordinator and participants running and
    /// print client commands to try, until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
    /// Address of the demo coordinator (":0" picks a free port).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Serve the demo participants over HTTP/JSON (HTTP/1.1) instead of gRPC.
    #[arg(long)]
    pub http: bool,
}

/// One demo order: what it is, its payload, and how it must end.
struct Order {
    title: &'static str,
    payload: &'static str,
    expect: pb::SagaState,
    /// The outcome as the summary names it.
    outcome: &'static str,
}

const ORDERS: [Order; 3] = [
    Order {
        title: "an order that completes",
        payload: r#"{"order_id":"A-100","card":"ok"}"#,
        expect: pb::SagaState::Completed,
        outcome: "completed",
    },
    Order {
        title: "a declined card",
        payload: r#"{"order_id":"A-101","card":"declined"}"#,
        expect: pb::SagaState::Compensated,
        outcome: "card declined → compensated",
    },
    Order {
        title: "the shipping carrier stays down",
        payload: r#"{"order_id":"A-102","carrier":"down"}"#,
        expect: pb::SagaState::Compensated,
        outcome: "shipping retries exhausted → compensated",
    },
];

fn wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // The demo's coordinator has no authentication: loopback only.
    sagad::auth::exposure::Exposure {
        listen: args.listen,
        auth: false,
        tls: false,
        insecure_no_auth: false,
    }
    .check()
    .map_err(sagad::config::ConfigError::from)?;
    let palette = Palette::detect();
    let data_dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let definition =
        definition::parse_definition(Path::new("sagas/order-fulfillment.toml"), ORDER_FULFILLMENT)?;
    let server = server::start(
        ServerConfig {
            listen: args.listen,
            data_dir: data_dir.path().to_path_buf(),
            engine: EngineConfig::default(),
            metrics_listen: None,
            on_failed_webhook: None,
            retention: None,
            history_after: None,
            history_segment_min: sagad::archive::mover::SEGMENT_SAGAS_MIN,
            disk_reserve: sagad::journal::store::wal::DEFAULT_DISK_RESERVE,
            tls: Default::default(),
            postgres: None,
            auth_tokens: None,
            reload_interval: server::RELOAD_INTERVAL,
        },
        vec![definition],
    )
    .await?;
    let addr = server.local_addr();
    outln!(
        "sagad demo: coordinator on {addr}, journal in {}",
        data_dir.path().display()
    );
    server.ready().await;

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let result = async {
        let mut client = CoordinatorClient::connect(format!("http://{addr}")).await?;
        register_shop(&mut client, args.http, &stop, &tasks).await?;
        let mut sagas = Vec::new();
        for (i, order) in ORDERS.iter().enumerate() {
            sagas.push(run_order(&mut client, i + 1, order, &palette).await?);
        }
        summarise(&sagas, &palette);
        if args.serve {
            // Armed before the commands are printed: a signal right after must stop cleanly.
            let stop = crate::cli::signal::stop_signal(server.reload_hooks()).await;
            print_try_next(addr, &sagas, &palette);
            let _ = stop.await;
            outln!("\nstopping the demo");
        }
        check(&sagas)
    }
    .await;

    // Stop in any case, so a failed demo leaves nothing running.
    let stopped = server.stop().await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    result?;
    stopped?;
    Ok(())
}

/// Serves the three participants (over HTTP/JSON if `http`, else gRPC) and
/// registers them with fast retries.
async fn register_shop(
    client: &mut CoordinatorClient<Channel>,
    http: bool,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    for role in [Role::Orders, Role::Payments, Role::Shipping] {
        let (participant, protocol, forward, compensate) = if http {
            let participant = http::serve(role, stop, tasks).await?;
            let base = format!("http://{participant}");
            let (forward, compensate) = (format!("{base}/forward"), format!("{base}/compensate"));
            (participant, pb::Protocol::Http, forward, compensate)
        } else {
            let participant = shop::serve(role, stop, tasks).await?;
            // Any method with StepRequest/StepResponse works; these serve the
            // reference service.
            let base = format!("http://{participant}/sagad.v1.ParticipantService");
            let (forward, compensate) = (format!("{base}/Forward"), format!("{base}/Compensate"));
            (participant, pb::Protocol::Grpc, forward, compensate)
        };
        client
            .register_participant(pb::RegisterParticipantRequest {
                protocol: protocol as i32,
                name: role.name().into(),
                forward_endpoint: forward,
                compensate_endpoint: compensate,
                retry: Some(pb::RetryPolicy {
                    initial_interval: Some(wire(DEMO_INITIAL_INTERVAL)),
                    max_attempts: Some(DEMO_MAX_ATTEMPTS),
                    ..Default::default()
                }),
                timeout: Some(wire(DEMO_TIMEOUT)),
                ..Default::default()
            })
            .await?;
        let speaks = if http { "HTTP/JSON" } else { "gRPC" };
        outln!(
            "registered participant {:<9} at {participant} ({speaks})",
            role.name()
        );
    }
    Ok(())
}

/// Starts one order, prints its events as they happen, then its timeline.
async fn run_order(
    client: &mut CoordinatorClient<Channel>,
    number: usize,
    order: &Order,
    palette: &Palette,
) -> anyhow::Result<pb::Saga> {
    outln!(
        "\n{}",
        palette.paint(Tone::Bold, &format!("{number}. {}", order.title))
    );
    outln!("   payload {}", order.payload);
    let started = client
        .start_saga(pb::StartSagaRequest {
            definition: "order-fulfillment".into(),
            payload: order.payload.as_bytes().to_vec(),
            idempotency_key: format!("demo-order-{number}"),
            ..Default::default()
        })
        .await?
        .into_inner()
        .saga
        .context("StartSaga answered without a saga")?;

    // The stream replays from the first event, so nothing is missed between
    // the start and the watch.
    let mut events = client
        .watch_saga(pb::WatchSagaRequest {
            id: started.id.clone(),
        })
        .await?
        .into_inner();
    let mut ended = false;
    while let Some(event) = events.next().await {
        let event = event?;
        outln!("   {}", render::event_line(&event, palette));
        if is_terminal_event(&event) {
            ended = true;
            break;
        }
    }
    anyhow::ensure!(ended, "the event stream of saga {} ended early", started.id);

    let saga = client
        .get_saga(pb::GetSagaRequest {
            id: started.id,
            ..Default::default()
        })
        .await?
        .into_inner();
    outln!();
    for line in render::saga(&saga, palette).lines() {
        if line.is_empty() {
            outln!();
        } else {
            outln!("   {line}");
        }
    }
    Ok(saga)
}

/// One line per order naming how it ended.
fn summarise(sagas: &[pb::Saga], palette: &Palette) {
    outln!("\n{}", palette.paint(Tone::Bold, "Outcomes"));
    for (order, saga) in ORDERS.iter().zip(sagas) {
        let state = saga_state_name(saga.state);
        let as_expected = saga.state == order.expect as i32;
        let mark = if as_expected {
            palette.paint(Tone::Good, "✓")
        } else {
            palette.paint(Tone::Bad, "✗")
        };
        // In the order they were undone: last step first.
        let undone: Vec<&str> = saga
            .steps
            .iter()
            .rev()
            .filter(|s| step_state_name(s.state) == "COMPENSATED")
            .map(|s| s.name.as_str())
            .collect();
        let mut detail = String::new();
        if let Some((step, last)) = saga.steps.iter().find_map(failed_forward) {
            detail = if last.outcome == pb::AttemptOutcome::Rejected as i32 {
                format!("{} rejected: {}", step.name, last.error)
            } else {
                format!(
                    "{} gave up after {} attempts",
                    step.name, step.forward_attempts
                )
            };
        }
        if !undone.is_empty() {
            detail.push_str(&format!("; undone: {}", undone.join(", ")));
        }
        // Pad before painting: colour codes would count towards the width.
        let line = format!(
            "  {mark} {:<42} {} {}",
            order.outcome,
            palette.paint(tone_of(&state), &format!("{state:<12}")),
            detail
        );
        outln!("{}", line.trim_end());
    }
}

/// The step whose forward calls were made and none succeeded, with its last
/// forward attempt.
fn failed_forward(step: &pb::Step) -> Option<(&pb::Step, &pb::Attempt)> {
    let forward = pb::Action::Forward as i32;
    let mut attempts = step.attempts.iter().filter(|a| a.action == forward);
    if attempts
        .clone()
        .any(|a| a.outcome == pb::AttemptOutcome::Succeeded as i32)
    {
        return None;
    }
    attempts.next_back().map(|last| (step, last))
}

/// Fails the demo if an order ended other than as described.
fn check(sagas: &[pb::Saga]) -> anyhow::Result<()> {
    for (order, saga) in ORDERS.iter().zip(sagas) {
        anyhow::ensure!(
            saga.state == order.expect as i32,
            "demo order '{}' ended {}, expected {}",
            order.title,
            saga_state_name(saga.state),
            saga_state_name(order.expect as i32)
        );
    }
    Ok(())
}

/// How to invoke this binary again: the path it was started with if it was
/// started by path (as `cargo run` does), else `sagad` from `PATH`.
fn program() -> String {
    std::env::args()
        .next()
        .filter(|p| p.contains('/'))
        .unwrap_or_else(|| "sagad".into())
}

/// The commands to try against the running demo.
fn print_try_next(addr: SocketAddr, sagas: &[pb::Saga], palette: &Palette) {
    let sagad = program();
    let addr = format!("http://{addr}");
    let declined = sagas.get(1).map(|s| s.id.as_str()).unwrap_or("ID");
    let commands = [
        ("every saga so far", format!("{sagad} list --addr {addr}")),
        (
            "where and why the declined card stopped",
            format!("{sagad} get {declined} --addr {addr}"),
        ),
        (
            "start an order and wait for it (exit 0: COMPLETED)",
            format!(
                "{sagad} start order-fulfillment --payload '{{\"order_id\":\"B-1\"}}' --wait --addr {addr}"
            ),
        ),
        (
            "a slow order: then run the watch (or cancel) command it prints",
            format!(
                "{sagad} start order-fulfillment --payload '{{\"order_id\":\"B-2\",\"delay_ms\":1500}}' --addr {addr}"
            ),
        ),
        (
            "exit 4: compensated",
            format!(
                "{sagad} start order-fulfillment --payload '{{\"order_id\":\"B-3\",\"carrier\":\"down\"}}' --wait --addr {addr}"
            ),
        ),
        (
            "cancel a running saga",
            format!("{sagad} cancel ID --reason 'customer changed their mind' --addr {addr}"),
        ),
        (
            "the same, as JSON for scripts",
            format!("{sagad} list --json --addr {addr}"),
        ),
        (
            "who takes part",
            format!("{sagad} participants list --addr {addr}"),
        ),
        (
            "what can run",
            format!("{sagad} definitions list --addr {addr}"),
        ),
        (
            "plug in the example payments service (README: Writing a participant)",
            format!(
                "{sagad} participants register payments --forward http://127.0.0.1:7002/shop.Payments/Charge --compensate http://127.0.0.1:7002/shop.Payments/Refund --addr {addr}"
            ),
        ),
    ];
    outln!(
        "\n{}",
        palette.paint(
            Tone::Bold,
            &format!("The demo keeps running, coordinator at {addr}\nTry, from another terminal:")
        )
    );
    for (what, command) in commands {
        outln!("\n  # {what}\n  {command}");
    }
    outln!("\n  (or `export SAGAD_ADDR={addr}` and drop the --addr flags)");
    outln!("\nPress Ctrl-C to stop; the demo journal is deleted on exit.");
}
