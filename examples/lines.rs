//! A line protocol over loopback with sockactor: a server that answers each line in upper
//! case, and a client that sends 1,000 lines and checks every answer, in order. Ends by
//! itself. `cargo run --example lines`; the same program in plain tokio is
//! `examples/lines_tokio.rs`.

use sockactor::Socket;
use tokio::net::TcpListener;
use tokio_util::codec::LinesCodec;

const LINES: usize = 1000;

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    actix::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            actix::spawn(async move {
                let (mut tx, mut rx) = Socket::adopt_framed(stream, LinesCodec::new()).await?;
                while let Some(line) = rx.next().await {
                    tx.send(line?.to_uppercase()).await?;
                }
                Ok::<_, Box<dyn std::error::Error>>(())
            });
        }
    });

    let (mut tx, mut rx) = Socket::connect_framed(addr, LinesCodec::new()).await?;
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
