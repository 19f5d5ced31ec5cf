//! The line protocol of `examples/lines.rs` in plain tokio and tokio-util `Framed`, for
//! comparison: a server that answers each line in upper case, and a client that sends
//! 1,000 lines and checks every answer, in order. Ends by itself.
//! `cargo run --example lines_tokio`

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LinesCodec};

const LINES: usize = 1000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut tx, mut rx) = Framed::new(stream, LinesCodec::new()).split();
                while let Some(line) = rx.next().await {
                    tx.send(line?.to_uppercase()).await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            });
        }
    });

    let (mut tx, mut rx) = Framed::new(TcpStream::connect(addr).await?, LinesCodec::new()).split();
    for i in 0..LINES {
        tx.send(format!("line {i}")).await?;
    }
    for i in 0..LINES {
        let answer = rx.next().await.ok_or("the server closed early")??;
        if answer != format!("LINE {i}") {
            return Err(format!("answer {i} was {answer:?}").into());
        }
    }
    println!("{LINES} lines answered in order");
    Ok(())
}
