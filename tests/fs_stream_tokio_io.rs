//! `FileStream` speaks Tokio's I/O traits: `tokio::io::copy`, `BufReader`
//! lines, and seeks all work on the crate's files, with the data checked.

pub mod support;

use std::io::SeekFrom;

use aioctx::fs::OpenOptions;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

#[test]
fn copy_lines_and_seeks_through_tokio_io() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = support::TempPath::new("stream");
    let copy_path = support::TempPath::new("stream-copy");
    let mut lines = String::new();
    for i in 0..5000 {
        lines.push_str(&format!("line {i}\n"));
    }
    std::fs::write(&path.0, &lines).unwrap();
    let ctx2 = ctx.clone();
    ctx.spawn(async move {
        let ctx = ctx2;
        let source = OpenOptions::new()
            .read(true)
            .open(&ctx, &path.0)
            .await
            .unwrap();
        let target = OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .open(&ctx, &copy_path.0)
            .await
            .unwrap();
        // copy: reads and writes of every size the copy loop picks.
        let copied = tokio::io::copy(&mut source.stream(), &mut target.stream())
            .await
            .unwrap();
        assert_eq!(copied, lines.len() as u64);
        assert_eq!(std::fs::read_to_string(&copy_path.0).unwrap(), lines);

        // BufReader lines.
        let mut reader = BufReader::new(source.stream()).lines();
        let mut count = 0;
        while let Some(line) = reader.next_line().await.unwrap() {
            assert_eq!(line, format!("line {count}"));
            count += 1;
        }
        assert_eq!(count, 5000);

        // Write, seek back, read; seek from the end.
        let mut stream = target.stream();
        stream.seek(SeekFrom::End(0)).await.unwrap();
        stream.write_all(b"tail!").await.unwrap();
        stream.flush().await.unwrap();
        let end = stream.seek(SeekFrom::End(-5)).await.unwrap();
        assert_eq!(end, lines.len() as u64);
        let mut tail = String::new();
        stream.read_to_string(&mut tail).await.unwrap();
        assert_eq!(tail, "tail!");
        stream.seek(SeekFrom::Start(5)).await.unwrap();
        let mut word = [0u8; 1];
        stream.read_exact(&mut word).await.unwrap();
        assert_eq!(&word, b"0");
        stream.seek(SeekFrom::Current(-2)).await.unwrap();
        stream.read_exact(&mut word).await.unwrap();
        assert_eq!(&word, b" ");
        assert!(stream.seek(SeekFrom::Current(-100)).await.is_err());
    })
    .join()
    .unwrap();
}
