//! The `kdcompress` binary: parses arguments, runs, prints the error chain.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`kdcompress groups x.kdz | head`) is how the reader says it has enough.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", chain_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: ` (as `{:#}` prints them), leaving out a cause whose text
/// the message already ends with: errors that name their source in their own message (as
/// `InputError::Open` does, for library users) would otherwise print it twice.
fn chain_message(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_message_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err = anyhow::Error::new(io).context("cannot open x.txt: gone");
        assert_eq!(chain_message(&err), "cannot open x.txt: gone");
        let err = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(chain_message(&err), "outer: middle: inner");
    }
}
