//! Making the wasmtime [`Engine`]: instance allocator, compile cache and
//! epoch interruption, chosen by [`EngineOptions`].
//!
//! An engine is shared by every store root and tenant of a process, so
//! everything here is per process: the pooling allocator reserves its
//! slots once, and compiled components are cached per user (not per store
//! directory), so a fresh store does not compile the chunker and plugins
//! again. Neither may stop a process from starting: a pool the OS will not
//! reserve falls back to on-demand allocation, and a cache directory that
//! cannot be made to no cache, each with a warning for the caller to show.

use std::path::PathBuf;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits;

/// How an engine allocates instances, caches compiled code and interrupts
/// guests. The default: on-demand allocation, the per-user compile cache,
/// no epoch interruption.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Pre-reserved instance slots (fast instantiation for many concurrent
    /// tenants); `None` allocates each instance on demand.
    pub pooling: Option<PoolingOptions>,
    /// Where compiled components are kept between processes.
    pub cache: CompileCache,
    /// Epoch interruption, which plugin time limits need (tenant policies
    /// and [`PluginOptions::time_limit`](super::plugin::PluginOptions::time_limit)).
    /// It costs a check on every loop back-edge and function entry.
    pub epoch_interruption: bool,
}

/// Where compiled components are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// Compile every component in every process.
    Off,
    /// The per-user directory [`user_cache_dir`].
    #[default]
    User,
    /// This directory (made absolute against the current directory).
    Dir(PathBuf),
}

/// The pooling allocator's slots. Every slot is reserved (virtual memory,
/// not committed) when the engine is made, so the totals bound how many
/// instances may be live at once in the whole process: an instantiation
/// past them fails, it does not wait.
#[derive(Clone, Debug)]
pub struct PoolingOptions {
    /// Component instances live at once: a chunker per tenant context plus
    /// a plugin per running plugin.
    pub component_instances_total: u32,
    /// Core instances live at once (a component has several).
    pub core_instances_total: u32,
    /// Linear memories live at once.
    pub memories_total: u32,
    /// Tables live at once.
    pub tables_total: u32,
    /// Largest linear memory a slot holds. Must hold the chunker's
    /// [`CHUNKER_MEMORY_BYTES_MAX`](limits::CHUNKER_MEMORY_BYTES_MAX) and
    /// every plugin memory limit in use (a store's limiter caps below it).
    pub memory_bytes_max: usize,
    /// Elements of the largest table a slot holds.
    pub table_elements_max: usize,
}

impl Default for PoolingOptions {
    /// Room for 100 concurrent tenants, each with its chunker and a plugin.
    /// With wasmtime's default guard regions each memory slot reserves
    /// about 4 GiB of address space (1 TiB in all), none of it committed.
    fn default() -> Self {
        PoolingOptions {
            component_instances_total: 200,
            core_instances_total: 2000,
            memories_total: 400,
            tables_total: 1000,
            memory_bytes_max: limits::CHUNKER_MEMORY_BYTES_MAX.max(limits::PLUGIN_MEMORY_BYTES_MAX),
            table_elements_max: limits::TABLE_ELEMENTS_MAX,
        }
    }
}

impl PoolingOptions {
    fn config(&self) -> PoolingAllocationConfig {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(self.component_instances_total)
            .total_core_instances(self.core_instances_total)
            .total_memories(self.memories_total)
            .total_tables(self.tables_total)
            .total_stacks(self.component_instances_total)
            .max_memory_size(self.memory_bytes_max)
            .table_elements(self.table_elements_max)
            // Rust guests built for wasip2 have a few tables per component
            // (the main module's and the adapter shims').
            .max_tables_per_module(4)
            .max_memories_per_module(1);
        pool
    }
}

/// The per-user compile cache directory: `$TBLOB_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/tensor-blob`, else `$HOME/.cache/tensor-blob`; `None`
/// if none of them is set (or the one set is not absolute, as the XDG
/// specification asks to ignore relative paths).
pub fn user_cache_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("TBLOB_CACHE_DIR")
        .or_else(|| absolute("XDG_CACHE_HOME").map(|dir| dir.join("tensor-blob")))
        .or_else(|| absolute("HOME").map(|home| home.join(".cache").join("tensor-blob")))
}

/// A wasmtime configuration suited to tensor-blob: stack sizes that leave
/// room for a chunker call nested in a plugin's async host call. No cache,
/// no pooling, no epochs: [`new_engine`] adds those.
pub fn default_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.max_wasm_stack(limits::WASM_STACK_BYTES_MAX);
    config.async_stack_size(limits::ASYNC_STACK_BYTES);
    config
}

/// An engine made as `options` ask, and what it had to do without.
pub struct NewEngine {
    pub engine: Engine,
    /// One line per fallback taken (pool not reserved, cache unusable), for
    /// the caller to show; the engine works either way.
    pub warnings: Vec<String>,
}

/// Makes an engine from [`default_config`] and `options`, falling back to
/// on-demand allocation if the pool cannot be reserved and to no cache if
/// the cache directory cannot be made. Fails only if even that engine
/// cannot be made.
pub fn new_engine(options: &EngineOptions) -> wasmtime::Result<NewEngine> {
    let mut warnings = Vec::new();
    let mut config = default_config();
    config.epoch_interruption(options.epoch_interruption);
    let cache_dir = match &options.cache {
        CompileCache::Off => None,
        CompileCache::User => {
            let dir = user_cache_dir();
            if dir.is_none() {
                warnings.push(
                    "no compile cache: none of TBLOB_CACHE_DIR, XDG_CACHE_HOME and HOME is set"
                        .to_string(),
                );
            }
            dir
        }
        CompileCache::Dir(dir) => Some(std::path::absolute(dir)?),
    };
    if let Some(dir) = cache_dir {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(&dir);
        // Creates the directory; refuses one it cannot make or resolve.
        match wasmtime::Cache::new(cache) {
            Ok(cache) => {
                config.cache(Some(cache));
            }
            Err(error) => warnings.push(format!("no compile cache: {}: {error:#}", dir.display())),
        }
    }
    if let Some(pooling) = &options.pooling {
        let mut pooled = config.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling.config()));
        match Engine::new(&pooled) {
            Ok(engine) => return Ok(NewEngine { engine, warnings }),
            Err(error) => warnings.push(format!(
                "pooling allocator unavailable, allocating instances on demand: {error:#}"
            )),
        }
    }
    Ok(NewEngine {
        engine: Engine::new(&config)?,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a cache directory that cannot be made costs the cache, not the
    /// engine; and a pool too large to reserve costs the pool.
    /// Method: point the cache below a regular file; ask for a pool of
    /// memories whose address space no 64-bit host has (2^20 slots of
    /// 1 TiB each).
    #[test]
    fn unusable_cache_and_pool_fall_back_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let made = new_engine(&EngineOptions {
            pooling: Some(PoolingOptions {
                memories_total: 1 << 20,
                memory_bytes_max: 1 << 40,
                ..PoolingOptions::default()
            }),
            cache: CompileCache::Dir(file.join("cache")),
            epoch_interruption: true,
        })
        .unwrap();
        assert_eq!(made.warnings.len(), 2, "{:?}", made.warnings);
        assert!(made.warnings[0].starts_with("no compile cache"));
        assert!(made.warnings[1].starts_with("pooling allocator unavailable"));
        assert!(made.engine.get_epoch_interruption());
    }

    /// Goal: a usable cache directory is created and filled by a compile.
    #[test]
    fn a_cache_directory_is_created_and_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a/b");
        let made = new_engine(&EngineOptions {
            cache: CompileCache::Dir(cache.clone()),
            ..EngineOptions::default()
        })
        .unwrap();
        assert!(made.warnings.is_empty(), "{:?}", made.warnings);
        wasmtime::component::Component::new(&made.engine, tensor_blob_artifacts::CHUNKER_WASM)
            .unwrap();
        assert!(
            files_under(&cache) > 0,
            "nothing cached in {}",
            cache.display()
        );
    }

    fn files_under(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    files_under(&path)
                } else {
                    1
                }
            })
            .sum()
    }
}
