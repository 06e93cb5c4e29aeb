//! `kessai audit`: recompute every balance from the transfers and report.

use std::process::ExitCode;

use crate::DataArgs;

/// Arguments of `kessai audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Instead of auditing: export evidence.
    #[command(subcommand)]
    command: Option<AuditCommand>,
}

/// Subcommands of `kessai audit`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Write every artefact of one settlement as .cose files, an index.json
    /// (type, signer key id, digests bound) and the verifying public keys
    /// as keys/<key id>.pem.
    Evidence(EvidenceArgs),
}

/// Arguments of `kessai audit evidence`.
#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Flow B: the bill, as STORE/ORDER (the selling store and its order
    /// number).
    #[arg(long)]
    bill: Option<String>,
    /// Output directory.
    #[arg(long)]
    out: std::path::PathBuf,
}

async fn evidence(e: EvidenceArgs) -> anyhow::Result<ExitCode> {
    let mut subjects = Vec::new();
    if let Some(bill) = &e.bill {
        let Some((store, order)) = bill.split_once('/') else {
            anyhow::bail!("--bill must be STORE/ORDER");
        };
        subjects.push(kessai_host::routes::flow_b::bill_subject(store, order));
    }
    if subjects.is_empty() {
        anyhow::bail!("name what to export (e.g. --bill STORE/ORDER)");
    }
    let config = e
        .data
        .host_config("127.0.0.1:0".parse().expect("static address"));
    let state = kessai_host::app::open_state(
        &config,
        std::sync::Arc::new(kessai_host::clock::SystemClock),
    )
    .await?;
    let index = kessai_host::evidence_export::export(&state, &subjects, &e.out, &[]).await?;
    for entry in &index {
        println!(
            "{}  {:<28} signer {:<16} binds {}",
            entry.file,
            entry.kind,
            if entry.signer.is_empty() {
                "-"
            } else {
                &entry.signer
            },
            entry.binds.len()
        );
    }
    println!("{} artefacts written to {}", index.len(), e.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Runs the auditor; exit 0 if the ledger is consistent, 1 otherwise.
pub async fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    if let Some(AuditCommand::Evidence(e)) = a.command {
        return evidence(e).await;
    }
    let db = a.data.open_db().await?;
    let report = kessai_store::audit::audit(&db).await?;
    let evidence = kessai_store::evidence::audit_links(&db).await?;
    let clean = report.is_clean() && evidence.findings.is_empty();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["evidence"] = serde_json::to_value(&evidence)?;
        v["clean"] = serde_json::Value::Bool(clean);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "audited {} accounts and {} transfers: {}",
            report.accounts,
            report.transfers,
            if report.is_clean() {
                "ledger consistent".to_string()
            } else {
                format!("{} finding(s)", report.findings.len())
            }
        );
        for f in &report.findings {
            println!("  - {}", serde_json::to_string(f)?);
        }
        println!(
            "checked {} evidence links ({} purged by retention): {}",
            evidence.links,
            evidence.purged,
            if evidence.findings.is_empty() {
                "all present and intact".to_string()
            } else {
                format!("{} finding(s)", evidence.findings.len())
            }
        );
        for f in &evidence.findings {
            println!("  - {}", serde_json::to_string(f)?);
        }
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
