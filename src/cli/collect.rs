//! `vpoller collect`: properties of vSphere objects as JSON, like
//! `govc object.collect`.

use clap::Args;
use serde_json::Value;
use std::io::Write;
use std::ops::ControlFlow;

use super::target::TargetArgs;
use crate::vsphere::collector::DEFAULT_PAGE_SIZE;
use crate::vsphere::{Client, MoRef};

#[derive(Debug, Args)]
pub struct CollectArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Managed object type, e.g. VirtualMachine, HostSystem, Datastore
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub kind: String,

    /// Comma-separated property paths, e.g. name,runtime.powerState
    #[arg(long, short = 'p', value_delimiter = ',', required = true)]
    pub properties: Vec<String>,

    /// Only the object with this name
    #[arg(long, short = 'n')]
    pub name: Option<String>,
}

/// Prints a JSON list with one object per managed object: its reference
/// under `_ref` and each property by its path. Rows are written as they
/// are decoded.
pub async fn run(args: CollectArgs) -> Result<(), String> {
    let session = args.target.connect().await?;
    let result = collect(&session, &args).await;
    if let Err(e) = session.shutdown().await {
        tracing::debug!("logout: {e}");
    }
    result
}

async fn collect(session: &Client, args: &CollectArgs) -> Result<(), String> {
    let properties: Vec<String> = args
        .properties
        .iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if properties.is_empty() {
        return Err("--properties names no property".into());
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    let mut first = true;
    let mut write_error = None;
    let mut emit = |row: Value| {
        let sep = if first { "[\n" } else { ",\n" };
        first = false;
        let written = out
            .write_all(sep.as_bytes())
            .and_then(|()| serde_json::to_writer(&mut out, &row).map_err(std::io::Error::from));
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    };

    match &args.name {
        Some(name) => {
            let found = session
                .find(&args.kind, "name", &Value::String(name.clone()))
                .await
                .map_err(|e| e.to_string())?;
            let Some(obj) = found else {
                return Err(format!(
                    "no {} named {name:?} on {}",
                    args.kind,
                    session.host()
                ));
            };
            let rows = session
                .get_objects(std::slice::from_ref::<MoRef>(&obj), &properties)
                .await
                .map_err(|e| e.to_string())?;
            for row in rows {
                if emit(row.into_row()).is_break() {
                    break;
                }
            }
        }
        None => {
            let view = session
                .container_view(None, &[args.kind.as_str()])
                .await
                .map_err(|e| e.to_string())?;
            let filter = crate::vsphere::collector::filter_for_view(&view, &args.kind, &properties);
            session
                .retrieve(&filter, DEFAULT_PAGE_SIZE, |o| emit(o.into_row()))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let closing: &[u8] = if first { b"[]\n" } else { b"\n]\n" };
    if let Some(e) = write_error {
        return Err(format!("cannot write the output: {e}"));
    }
    out.write_all(closing)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the output: {e}"))
}
