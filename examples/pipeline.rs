//! A pipelined request/response client with sockactor: 10,000 requests to a local server
//! (it answers each number with its double), at most 64 unanswered at any time, every
//! answer checked in order. Ends by itself. `cargo run --example pipeline`; the same
//! program in plain tokio is `examples/pipeline_tokio.rs`.

use sockactor::Socket;
use tokio::net::TcpListener;
use tokio_util::codec::LinesCodec;

const REQUESTS: u64 = 10_000;
const WINDOW: u64 = 64;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    actix::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (mut tx, mut rx) = Socket::adopt_framed(stream, LinesCodec::new()).await?;
        while let Some(line) = rx.next().await {
            tx.send((line?.parse::<u64>()? * 2).to_string()).await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    });

    let (mut tx, mut rx) = Socket::connect_framed(addr, LinesCodec::new()).await?;
    let (mut sent, mut answered) = (0, 0);
    while answered < REQUESTS {
        if sent < REQUESTS && sent - answered < WINDOW {
            tx.send(sent.to_string()).await?;
            sent += 1;
        } else {
            let answer = rx.next().await.ok_or("the server closed early")??;
            if answer != (answered * 2).to_string() {
                return Err(format!("answer {answered} was {answer:?}").into());
            }
            answered += 1;
        }
    }
    println!("{REQUESTS} requests answered in order, at most {WINDOW} in flight");
    Ok(())
}
