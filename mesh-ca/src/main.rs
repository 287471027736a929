use clap::Parser;
use mesh_ca::cli::{Cli, Command, RootCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            use std::io::IsTerminal;
            let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
                .map_err(|e| anyhow::anyhow!("invalid --log filter {:?}: {e}", args.log))?;
            // Plain text in files: operators and tests grep `caller=`, `reason=`.
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init();
            mesh_ca::cli::run(args).await
        }
        Command::Request(args) => {
            let code = mesh_ca::cli::request(args).await?;
            std::process::exit(code)
        }
        Command::Root {
            command: RootCommand::Create {
                cacerts_dir,
                trust_domain,
            },
        } => {
            let created = mesh_ca::authority::create_root(&cacerts_dir, &trust_domain)?;
            println!(
                "{} {}",
                if created {
                    "created"
                } else {
                    "kept the existing root in"
                },
                cacerts_dir.display()
            );
            Ok(())
        }
    }
}
