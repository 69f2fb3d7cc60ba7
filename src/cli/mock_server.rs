//! `dotevals mock-server --spec F --port P`: the spec's mock model as a
//! standalone OpenAI-compatible server, for other tools and benchmarks.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::model::mock::MockServer;
use crate::Exit;

#[derive(Debug, Args)]
pub struct MockServerArgs {
    /// Spec whose `model` is `provider: mock`
    #[arg(long, value_name = "SPEC")]
    pub spec: PathBuf,
    /// Port to listen on (0 picks a free one, printed on start)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Override the spec's latency, e.g. 50ms
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub latency: Option<Duration>,
}

pub fn serve(args: MockServerArgs) -> Result<Exit, CliError> {
    let eval = crate::spec::load(&args.spec)?;
    let Some(mut mock) = eval.model.mock().cloned() else {
        return Err(CliError::usage(
            format!("{} does not use `provider: mock`", args.spec.display()),
            Some(
                "mock-server serves a spec's mock model; set `model.provider: mock` and `replies`"
                    .into(),
            ),
        ));
    };
    if let Some(latency) = args.latency {
        mock.latency = latency;
    }
    let runtime = crate::runner::runtime().map_err(super::finish::runtime_error)?;
    runtime.block_on(async {
        let mut server =
            MockServer::start_named(mock, (args.host, args.port).into(), &eval.model.name)
                .await
                .map_err(|e| {
                    CliError::Failed(format!("cannot listen on {}:{}: {e}", args.host, args.port))
                })?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "mock model of {} listening on {}",
            args.spec.display(),
            server.base_url()
        );
        let _ = out.flush();
        drop(out);
        tokio::select! {
            _ = server.wait() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(Exit::Success)
    })
}
