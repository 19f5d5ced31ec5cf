//! The pipelined client of `examples/pipeline.rs` in plain tokio and tokio-util `Framed`,
//! for comparison: 10,000 requests to a local server (it answers each number with its
//! double), at most 64 unanswered at any time, every answer checked in order. Ends by
//! itself. `cargo run --example pipeline_tokio`

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LinesCodec};

const REQUESTS: u64 = 10_000;
const WINDOW: u64 = 64;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (mut tx, mut rx) = Framed::new(stream, LinesCodec::new()).split();
        while let Some(line) = rx.next().await {
            tx.send((line?.parse::<u64>()? * 2).to_string()).await?;
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });

    let (mut tx, mut rx) = Framed::new(TcpStream::connect(addr).await?, LinesCodec::new()).split();
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
