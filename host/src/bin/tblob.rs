//! `tblob`: the tensor-blob command-line tool.
//!
//! Every put and get goes through the chunker component, exactly as a
//! plugin's would. Output contract (tests and scripts rely on it): `put`
//! prints only the id; `get` writes exactly the stored bytes; text output
//! escapes control characters in user strings (`--json` is exact). Exit
//! codes and stderr follow one rule, [`EXIT_CODES`] (also in `--help`).
//!
//! Commands that only read (`ls`, `stat`, `get`, `exists`, `verify`,
//! `quota show`) open the tenant read-only: they run beside a writer
//! process, see what was committed when they started, and create nothing
//! (a missing store or tenant is an error). Commands that write wait for a
//! tenant another process writes at most `--wait` seconds (default: about
//! half a second), then fail naming its holder.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tensor_blob_host::runtime::plugin::{LimitExceeded, Plugin, PluginOptions, TimeLimitExceeded};
use tensor_blob_host::runtime::{
    self, Chunking, CompileCache, EngineOptions, KeyValue, PutOptions, Runtime, RuntimeOptions,
};
use tensor_blob_host::store::{ArtifactId, Durability, GcPolicy, StoreError, StoreOptions};
use tensor_blob_host::tenant::{Access, LOCK_WAIT_DEFAULT};

/// The exit-code and stderr rule of every command (`tblob --help`).
const EXIT_CODES: &str = "\
Exit codes:
  0  success (`exists`: present; `verify`: no damage found)
  1  the answer is no: `exists`: absent; `verify`: damage found (a damaged
     artifact, or damage found in the store files when opening)
  2  an error (bad arguments, unknown id, data that fails verification on
     `get`, I/O, a tenant in use): one line on stderr, `tblob: <message>`

Damage found when opening a tenant's store is reported once, on stderr,
before the command's own output: one line `tblob: warning: store damage: ...`
(`verify` instead lists each problem as `tblob: store damage: <problem>`).
Text output escapes control characters and backslashes in stored strings
(\\n, \\t, \\\\, \\u{1b}); `--json` output is exact.";

#[derive(Parser)]
#[command(
    name = "tblob",
    version,
    about = "A content-addressable blob store for WebAssembly components",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Store directory (default: $TBLOB_STORE, else ./.tblob).
    #[arg(long, global = true, env = "TBLOB_STORE", default_value = ".tblob")]
    store: PathBuf,
    /// Tenant whose blobs to act on.
    #[arg(long, global = true, default_value = "default")]
    tenant: String,
    /// Skip fsync (only for throwaway stores: an acknowledged write may be lost).
    #[arg(long, global = true, hide = true)]
    no_fsync: bool,
    /// Writing commands: wait up to this many seconds for a tenant another
    /// process is writing (default: about half a second), then fail.
    #[arg(long, global = true, value_name = "SECONDS", value_parser = parse_seconds)]
    wait: Option<std::time::Duration>,
    /// Directory for compiled components, shared by every store (default:
    /// $TBLOB_CACHE_DIR, else $XDG_CACHE_HOME/tensor-blob, else
    /// ~/.cache/tensor-blob).
    #[arg(long, global = true, value_name = "DIR", env = "TBLOB_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile components afresh, without reading or writing the cache
    /// (overrides --cache-dir and $TBLOB_CACHE_DIR).
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChunkingMode {
    Fixed,
    Cdc,
}

#[derive(Subcommand)]
enum Command {
    /// Store a file (or stdin with `-`); prints the new artifact id.
    Put {
        file: PathBuf,
        /// Filename to record (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        content_type: Option<String>,
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Id of an artifact this one links to.
        #[arg(long = "link")]
        links: Vec<String>,
        #[arg(long, value_enum, default_value = "cdc")]
        chunking: ChunkingMode,
        /// Fixed chunk size, or average CDC chunk size, in bytes.
        #[arg(long)]
        chunk_size: Option<u32>,
    },
    /// Write an artifact's bytes to OUT (default: stdout).
    Get {
        id: String,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Delete an artifact.
    Rm { id: String },
    /// Exit 0 if the artifact exists, 1 if not.
    Exists { id: String },
    /// An artifact's metadata, or the store's totals.
    Stat {
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List artifacts.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every chunk of one or all artifacts; exit 1 and print damaged
    /// ids if any fails, or if the open found damage in the store files (an
    /// unknown id is an error, exit 2).
    Verify { id: Option<String> },
    /// Reclaim space held by chunks no artifact references.
    Gc,
    /// Run a plugin component against the store: a WASI 0.2 command
    /// (`wasi:cli/run`), or one exporting `tensor:blob/stream-run` (world
    /// `stream-plugin-command`), which is then called instead.
    Run {
        plugin: PathBuf,
        /// Grant read access to a host directory: PATH, or HOST::GUEST.
        #[arg(long = "dir")]
        dirs: Vec<String>,
        /// Stop the plugin if it runs longer than this many seconds.
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        time_limit: Option<std::time::Duration>,
        /// Largest linear memory the plugin may grow to, with an optional
        /// K, M or G suffix (default 1G; a tenant policy may lower it).
        #[arg(long, value_name = "SIZE", value_parser = parse_memory_limit)]
        memory_limit: Option<usize>,
        /// Arguments passed to the plugin.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the built-in example plugin: stores FILES (read from the current
    /// directory) and reads them back, or with none a dedup demonstration.
    Demo { files: Vec<String> },
    /// Show or change the tenant's quota (kept durably with the tenant).
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
    },
}

#[derive(Subcommand)]
enum QuotaAction {
    /// Change the limits named; the others stay. Each takes a number, with
    /// an optional suffix K, M, G or T (powers of 1024: 10G, 512M, 4096),
    /// or `none` to remove that limit.
    Set {
        /// Everything the tenant may cost on disk (chunk records and metadata).
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        bytes: Option<Limit>,
        /// Live artifacts.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        artifacts: Option<Limit>,
        /// Size of one artifact.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        artifact_bytes: Option<Limit>,
        /// Uploads open at once.
        #[arg(long, value_name = "N|none", value_parser = parse_limit)]
        writers: Option<Limit>,
    },
    /// Print each limit and what is in use.
    Show {
        #[arg(long)]
        json: bool,
    },
}

/// A quota limit as given on the command line: `None` is `none`.
#[derive(Clone, Copy)]
struct Limit(Option<u64>);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("tblob: {}", error_line(&error));
            ExitCode::from(2)
        }
    }
}

/// `error` and its causes as one line. A cause whose text the line already
/// holds is left out: an I/O error's message quotes its OS error, which is
/// also its source, and printing both said the cause twice.
fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    escape(&line, false).into_owned()
}

/// `text` with its control characters escaped as in Rust strings (`\n`,
/// `\t`, `\r`, `\u{1b}`), so a newline in a stored filename cannot split an
/// entry of text output; with `backslashes`, `\` is doubled too, so the
/// escaped text reads back unambiguously.
fn escape(text: &str, backslashes: bool) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| c.is_control() || (backslashes && c == '\\');
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' if backslashes => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A stored string (filename, tag, custom pair...) for text output.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape(text, true)
}

/// Whether `command` only reads, so it opens its tenant read-only.
fn reads_only(command: &Command) -> bool {
    match command {
        Command::Get { .. }
        | Command::Exists { .. }
        | Command::Stat { .. }
        | Command::Ls { .. }
        | Command::Verify { .. } => true,
        Command::Quota { action } => matches!(action, QuotaAction::Show { .. }),
        Command::Put { .. }
        | Command::Rm { .. }
        | Command::Gc
        | Command::Run { .. }
        | Command::Demo { .. } => false,
    }
}

/// A put's input, opened before the store is: a put that cannot start
/// creates nothing.
type PutSource = (Box<dyn Read>, Option<u64>);

/// The chunking `--chunking` and `--chunk-size` ask for (`None`: the
/// chunker's default), checked against the limits the chunker applies.
fn put_chunking(mode: ChunkingMode, size: Option<u32>) -> Result<Option<Chunking>> {
    use tensor_blob_chunking as chunking;
    let (chunking, check) = match (mode, size) {
        (ChunkingMode::Fixed, size) => {
            let size = size.unwrap_or(1 << 16);
            (Some(Chunking::Fixed(size)), chunking::Chunking::Fixed(size))
        }
        (ChunkingMode::Cdc, None) => return Ok(None),
        (ChunkingMode::Cdc, Some(avg)) => {
            let (min, max) = ((avg / 4).max(64), avg.saturating_mul(4));
            let params =
                runtime::bindings::chunker::tensor::blob::types::CdcParams { min, avg, max };
            let check = chunking::Chunking::ContentDefined(chunking::CdcParams {
                min_bytes: min,
                avg_bytes: avg,
                max_bytes: max,
            });
            (Some(Chunking::ContentDefined(params)), check)
        }
    };
    check
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid argument: --chunk-size: {e}"))?;
    Ok(chunking)
}

/// Checks a put's metadata against the store's limits (which the chunker
/// and the store check again) and opens its input.
fn open_put_source(
    file: &Path,
    strings: [(&str, Option<&String>); 2],
    tags: &[String],
    links: &[String],
) -> Result<PutSource> {
    use tensor_blob_host::store::{LINKS_MAX, STRING_BYTES_MAX, TAGS_MAX, TAG_BYTES_MAX};
    for (name, value) in strings {
        if value.is_some_and(|v| v.len() > STRING_BYTES_MAX) {
            bail!("invalid argument: {name} is over {STRING_BYTES_MAX} bytes");
        }
    }
    if tags.len() > TAGS_MAX || links.len() > LINKS_MAX {
        bail!("invalid argument: at most {TAGS_MAX} tags and {LINKS_MAX} links");
    }
    if tags.iter().any(|t| t.is_empty() || t.len() > TAG_BYTES_MAX) {
        bail!("invalid argument: a tag must be 1..={TAG_BYTES_MAX} bytes");
    }
    for link in links {
        link.parse::<ArtifactId>()
            .with_context(|| format!("--link {link}"))?;
    }
    if file == Path::new("-") {
        return Ok((Box::new(std::io::stdin().lock()), None));
    }
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let metadata = f.metadata()?;
    if metadata.is_dir() {
        bail!("{} is a directory", file.display());
    }
    Ok((Box::new(f), Some(metadata.len())))
}

fn run(cli: Cli) -> Result<u8> {
    // Checked before anything is opened or created: a bad name, a missing
    // input file or link makes no store and no tenant.
    tensor_blob_host::tenant::validate_name(&cli.tenant)?;
    let mut put_inputs = match &cli.command {
        Command::Put {
            file,
            name,
            content_type,
            tags,
            links,
            chunking,
            chunk_size,
        } => Some((
            put_chunking(*chunking, *chunk_size)?,
            open_put_source(
                file,
                [
                    ("--name", name.as_ref()),
                    ("--content-type", content_type.as_ref()),
                ],
                tags,
                links,
            )?,
        )),
        _ => None,
    };
    let runtime = open_runtime(&cli)?;
    let tenant = cli.tenant.as_str();
    // Damage the open found and stepped over (a bad metadata record,
    // unreadable segment bytes, a lost chunk), reported once and before
    // the command's own output: `verify` lists it and fails on it, every
    // other command says in one line that there is some.
    let store_damage: Vec<String> = runtime
        .tenant_store(tenant)?
        .recovery_report()
        .damage()
        .map(|problem| escape(&problem.to_string(), false).into_owned())
        .collect();
    if !store_damage.is_empty() && !matches!(cli.command, Command::Verify { .. }) {
        eprintln!(
            "tblob: warning: store damage: {} problem(s) found opening tenant {tenant}; `tblob verify` lists them",
            store_damage.len()
        );
    }
    match cli.command {
        Command::Put {
            file,
            name,
            content_type,
            tags,
            links,
            ..
        } => {
            let (chunking, (mut source, size)) =
                put_inputs.take().expect("checked before the runtime");
            let filename = name.or_else(|| {
                (file != Path::new("-"))
                    .then(|| file.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .flatten()
            });
            let options = PutOptions {
                filename,
                content_type,
                creator: Some(format!("tblob {}", env!("CARGO_PKG_VERSION"))),
                tags,
                links,
                external_links: Vec::new(),
                custom: Vec::<KeyValue>::new(),
                chunking,
            };
            let mut chunker = runtime.chunker(tenant)?;
            let bar = progress(size, "put");
            let id = chunker.put_from(&mut source, &options, &mut |n| bar.set_position(n))?;
            bar.finish_and_clear();
            println!("{id}");
            Ok(0)
        }
        Command::Get { id, output } => {
            let mut chunker = runtime.chunker(tenant)?;
            let size = chunker.store().metadata(&id.parse()?)?.size;
            let bar = progress(Some(size), "get");
            match output {
                None => {
                    let stdout = std::io::stdout();
                    let mut sink = std::io::BufWriter::new(stdout.lock());
                    chunker.get_into(&id, &mut sink, &mut |n| bar.set_position(n))?;
                    sink.flush()?;
                }
                Some(path) => {
                    // Written beside the target and renamed into place, so a
                    // failed get never leaves a half file under OUT's name.
                    let partial = partial_path(&path);
                    let result = (|| -> Result<()> {
                        let file = std::fs::File::create(&partial)
                            .with_context(|| format!("creating {}", partial.display()))?;
                        let mut sink = std::io::BufWriter::new(file);
                        chunker.get_into(&id, &mut sink, &mut |n| bar.set_position(n))?;
                        sink.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                        std::fs::rename(&partial, &path)
                            .with_context(|| format!("renaming to {}", path.display()))?;
                        Ok(())
                    })();
                    if result.is_err() {
                        let _ = std::fs::remove_file(&partial);
                    }
                    result?;
                }
            }
            bar.finish_and_clear();
            Ok(0)
        }
        Command::Rm { id } => {
            runtime.chunker(tenant)?.store().delete(&id.parse()?)?;
            Ok(0)
        }
        Command::Exists { id } => {
            let exists = runtime.chunker(tenant)?.store().exists(&id.parse()?);
            Ok(if exists { 0 } else { 1 })
        }
        Command::Stat { id: Some(id), json } => {
            let id: ArtifactId = id.parse()?;
            let meta = runtime.tenant_store(tenant)?.metadata(&id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&meta)?);
            } else {
                fn text(value: Option<&str>) -> std::borrow::Cow<'_, str> {
                    value.map_or("-".into(), printable)
                }
                println!("id:           {}", meta.id);
                println!("filename:     {}", text(meta.filename.as_deref()));
                println!("content-type: {}", text(meta.content_type.as_deref()));
                println!("creator:      {}", text(meta.creator.as_deref()));
                println!("size:         {}", meta.size);
                println!("digest:       {}", meta.digest);
                println!("chunks:       {}", meta.chunk_count);
                println!("created-ms:   {}", meta.created_ms);
                println!("modified-ms:  {}", meta.modified_ms);
                let tags: Vec<_> = meta.tags.iter().map(|tag| printable(tag)).collect();
                println!("tags:         {}", tags.join(", "));
                let links: Vec<String> = meta.links.iter().map(|l| l.to_string()).collect();
                println!("links:        {}", links.join(", "));
                for (key, value) in &meta.custom {
                    println!("custom:       {}={}", printable(key), printable(value));
                }
            }
            Ok(0)
        }
        Command::Stat { id: None, json } => {
            let stats = runtime.tenant_store(tenant)?.stats();
            let dedup_ratio = if stats.physical_bytes == 0 {
                1.0
            } else {
                stats.logical_bytes as f64 / stats.physical_bytes as f64
            };
            if json {
                let mut value = serde_json::to_value(stats)?;
                value["dedup_ratio"] = serde_json::json!(dedup_ratio);
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("artifacts:      {}", stats.artifacts);
                println!("chunks:         {}", stats.chunks);
                println!("logical bytes:  {}", stats.logical_bytes);
                println!("physical bytes: {}", stats.physical_bytes);
                println!("disk bytes:     {}", stats.disk_bytes);
                println!("dedup ratio:    {dedup_ratio:.3}");
                println!(
                    "garbage:        {} chunks, {} bytes (pending GC)",
                    stats.garbage_chunks, stats.garbage_bytes
                );
                println!("dead bytes:     {}", stats.dead_bytes);
            }
            Ok(0)
        }
        Command::Ls { json } => {
            let store = runtime.tenant_store(tenant)?;
            let metas = store
                .ids()
                .map(|id| store.metadata(&id))
                .collect::<Result<Vec<_>, _>>()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&metas)?);
            } else {
                for meta in metas {
                    println!(
                        "{}  {:>12}  {}",
                        meta.id,
                        meta.size,
                        meta.filename.as_deref().map_or("-".into(), printable)
                    );
                }
            }
            Ok(0)
        }
        Command::Verify { id } => {
            let store = runtime.tenant_store(tenant)?;
            for problem in &store_damage {
                eprintln!("tblob: store damage: {problem}");
            }
            // Checked before the verdict: an unknown or malformed id is an
            // error (exit 2), not damage.
            let (checked, damaged, dangling) = match id {
                Some(id) => {
                    let id: ArtifactId = id.parse()?;
                    match store.verify(&id) {
                        Ok(()) => (1, Vec::new(), Vec::new()),
                        Err(e @ StoreError::NotFound(_)) => return Err(e.into()),
                        Err(e) => (1, vec![(id, e.to_string())], Vec::new()),
                    }
                }
                None => {
                    let report = store.verify_all();
                    (
                        report.artifacts_checked,
                        report.damaged,
                        report.dangling_links,
                    )
                }
            };
            // Only damage to meta.log leaves one (a delete drops the links
            // to what it deletes); the artifact's bytes are whole.
            for (id, target) in &dangling {
                eprintln!("tblob: {id}: links to {target}, which is not in the store");
            }
            for (id, why) in &damaged {
                println!("{id}");
                eprintln!("tblob: {id}: {}", escape(why, false));
            }
            eprintln!(
                "tblob: verified {checked} artifacts, {} damaged; {} problems found in the store files",
                damaged.len(),
                store_damage.len()
            );
            Ok(
                if damaged.is_empty() && dangling.is_empty() && store_damage.is_empty() {
                    0
                } else {
                    1
                },
            )
        }
        Command::Gc => {
            let report = runtime.tenant_store(tenant)?.gc()?;
            let stats = runtime.tenant_store(tenant)?.stats();
            println!(
                "freed {} garbage chunks ({} bytes); compacted {} segments ({} live bytes copied); reclaimed {} segment bytes and {} metadata log bytes",
                report.chunks_removed,
                report.chunk_bytes_removed,
                report.segments_removed,
                report.bytes_copied,
                report.bytes_reclaimed,
                report.meta_bytes_reclaimed
            );
            if report.bytes_punched > 0 {
                // A full disk: garbage freed in place (holes punched).
                println!(
                    "no room to copy live records out: freed {} bytes of garbage in place",
                    report.bytes_punched
                );
            }
            println!(
                "disk bytes: {} before, {} after",
                report.disk_bytes_before, report.disk_bytes_after
            );
            println!(
                "pending: {} garbage chunks ({} bytes) in segments not worth compacting; {} dead bytes on disk",
                stats.garbage_chunks, stats.garbage_bytes, stats.dead_bytes
            );
            Ok(0)
        }
        Command::Run {
            plugin,
            dirs,
            time_limit,
            memory_limit,
            args,
        } => {
            let wasm =
                std::fs::read(&plugin).with_context(|| format!("reading {}", plugin.display()))?;
            let mut argv = vec![plugin.display().to_string()];
            argv.extend(args);
            let limits = RunLimits {
                time: time_limit,
                memory_bytes_max: memory_limit,
            };
            run_plugin(&runtime, tenant, &wasm, argv, &dirs, limits)
        }
        Command::Demo { files } => {
            let mut argv = vec!["example-plugin".to_string()];
            argv.extend(files);
            run_plugin(
                &runtime,
                tenant,
                tensor_blob_artifacts::EXAMPLE_PLUGIN_WASM,
                argv,
                &[".".to_string()],
                RunLimits::default(),
            )
        }
        Command::Quota { action } => quota(&runtime, tenant, action),
    }
}

/// The `quota` subcommand.
fn quota(runtime: &Runtime, tenant: &str, action: QuotaAction) -> Result<u8> {
    let store = runtime.tenant_store(tenant)?;
    match action {
        QuotaAction::Set {
            bytes,
            artifacts,
            artifact_bytes,
            writers,
        } => {
            let mut quota = store.quota();
            for (limit, field) in [
                (bytes, &mut quota.bytes_max),
                (artifacts, &mut quota.artifacts_max),
                (artifact_bytes, &mut quota.artifact_bytes_max),
                (writers, &mut quota.writers_max),
            ] {
                if let Some(Limit(value)) = limit {
                    *field = value;
                }
            }
            store.set_quota(quota)?;
        }
        QuotaAction::Show { json } => {
            let quota = store.quota();
            let usage = store.usage();
            if json {
                let value = serde_json::json!({
                    "tenant": tenant,
                    "quota": quota,
                    "usage": usage,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                let show =
                    |max: Option<u64>| max.map_or("unlimited".to_string(), |m| m.to_string());
                println!("tenant:          {tenant}");
                println!(
                    "bytes:           {} of {}",
                    usage.bytes,
                    show(quota.bytes_max)
                );
                println!(
                    "artifacts:       {} of {}",
                    usage.artifacts,
                    show(quota.artifacts_max)
                );
                println!("artifact-bytes:  {} each", show(quota.artifact_bytes_max));
                println!(
                    "writers:         {} of {}",
                    usage.writers,
                    show(quota.writers_max)
                );
            }
        }
    }
    Ok(0)
}

/// A size or count: digits with an optional K, M, G or T suffix (powers of
/// 1024, either case), or `none` (no limit).
fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let bad =
        || format!("{text:?}: expected a number with an optional K, M, G or T suffix, or none");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: u64 = digits.parse().map_err(|_| bad())?;
    value
        .checked_mul(1 << shift)
        .map(|v| Limit(Some(v)))
        .ok_or_else(|| format!("{text:?} does not fit in 64 bits"))
}

/// The store root, as a capability: the CLI is the one place that turns a
/// path into one. Writing commands create it if missing (each new
/// directory fsynced into its parent, so a power cut cannot take the store
/// directory away from under synced data). Reading commands create
/// nothing: a missing store or tenant is an error naming it.
fn open_root(cli: &Cli) -> Result<cap_std::fs::Dir> {
    let path = &cli.store;
    if !reads_only(&cli.command) {
        return tensor_blob_host::store::backend::cap::create_ambient_dir(
            path,
            cap_std::ambient_authority(),
        )
        .with_context(|| format!("opening store directory {}", path.display()));
    }
    if !path.is_dir() {
        bail!("no store at {}", path.display());
    }
    if !path.join("tenants").join(&cli.tenant).is_dir() {
        bail!("no tenant {} in store {}", cli.tenant, path.display());
    }
    cap_std::fs::Dir::open_ambient_dir(path, cap_std::ambient_authority())
        .with_context(|| format!("opening store directory {}", path.display()))
}

fn open_runtime(cli: &Cli) -> Result<Runtime> {
    let root = open_root(cli)?;
    let cache = if cli.no_cache {
        CompileCache::Off
    } else {
        cli.cache_dir
            .clone()
            .map_or(CompileCache::User, CompileCache::Dir)
    };
    let engine = runtime::new_engine(&EngineOptions {
        pooling: None,
        cache,
        // Where plugins run: a tenant's policy may set a time limit even
        // when the command line does not. Elsewhere the checks would cost
        // a little on every loop for nothing.
        epoch_interruption: matches!(cli.command, Command::Run { .. } | Command::Demo { .. }),
    })?;
    for warning in &engine.warnings {
        eprintln!("tblob: warning: {warning}");
    }
    let engine = engine.engine;
    let store = StoreOptions {
        durability: if cli.no_fsync {
            Durability::None
        } else {
            Durability::Sync
        },
        ..StoreOptions::default()
    };
    let options = RuntimeOptions {
        store,
        chunker_wasm: None,
        // Background GC only where the process lives on: a plugin run.
        // One-shot commands leave it to `tblob gc`.
        gc: matches!(cli.command, Command::Run { .. }).then(GcPolicy::default),
        access: Access {
            read_only: reads_only(&cli.command),
            lock_wait: cli.wait.unwrap_or(LOCK_WAIT_DEFAULT),
        },
    };
    Ok(Runtime::new(&engine, root, options)?)
}

/// `tblob run`'s own limits; a tenant's policy may be tighter.
#[derive(Default)]
struct RunLimits {
    time: Option<std::time::Duration>,
    memory_bytes_max: Option<usize>,
}

fn run_plugin(
    runtime: &Runtime,
    tenant: &str,
    wasm: &[u8],
    args: Vec<String>,
    dirs: &[String],
    limits: RunLimits,
) -> Result<u8> {
    let read_dirs = dirs
        .iter()
        .map(|d| match d.split_once("::") {
            Some((host, guest)) => (PathBuf::from(host), guest.to_string()),
            None => (PathBuf::from(d), d.clone()),
        })
        .collect();
    let options = PluginOptions {
        args,
        read_dirs,
        memory_bytes_max: limits.memory_bytes_max,
        time_limit: limits.time,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let plugin = Plugin::new(runtime, wasm)?;
    let code = tokio
        .block_on(plugin.run(tenant, &options))
        .map_err(plugin_failure)?;
    if !(0..=255).contains(&code) {
        bail!("plugin exited with code {code}");
    }
    Ok(code as u8)
}

/// A plugin's failure as one line: its cause (a limit it ran into) or the
/// trap, without the wasm backtrace (the plugin's own stderr, above, says
/// why it stopped).
fn plugin_failure(error: wasmtime::Error) -> anyhow::Error {
    if let Some(limit) = error.downcast_ref::<TimeLimitExceeded>() {
        return anyhow::anyhow!("{limit}");
    }
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return anyhow::anyhow!("{limit}");
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => anyhow::anyhow!("the plugin trapped: {trap}"),
        None => error.into(),
    }
}

/// A memory size for `--memory-limit`: like a quota size, but neither
/// `none` nor zero, and within the address space.
fn parse_memory_limit(text: &str) -> Result<usize, String> {
    match parse_limit(text)? {
        Limit(Some(bytes)) if bytes > 0 => {
            usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
        }
        _ => Err(format!("{text:?} is not a positive size")),
    }
}

/// A positive, finite number of seconds.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e9) {
        return Err(format!("{text} is not a positive number of seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tblob-partial");
    path.with_file_name(name)
}

/// A progress bar on stderr for transfers over 8 MiB, only on a terminal.
fn progress(size: Option<u64>, verb: &'static str) -> indicatif::ProgressBar {
    let large = size.is_none_or(|s| s > 8 << 20);
    if !large || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match size {
        Some(size) => indicatif::ProgressBar::new(size),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(verb);
    bar
}
