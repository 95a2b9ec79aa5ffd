//! The find-link step: the interface by name, event-driven, loading the virtio-net driver
//! (and its dependencies) when a driverless device is there and nothing else will (see the
//! module doc of `run`).

use super::{Connect, Deps, MODULE_RECHECK};
use crate::cli::RunOptions;
use crate::dhcp::step::DhcpClient;
use crate::exit::RunError;
use crate::report::Reporter;
use crate::system::{Links, ModuleError, Modules, Prober};
use guest_proto::{Event, Level};
use std::path::Path;
use std::time::Instant;

pub(super) async fn find_link<C: Connect, M: Modules, P: Prober, D: DhcpClient>(
    opts: &RunOptions,
    deps: &mut Deps<C, M, P, D>,
    rep: &mut Reporter,
    name: &str,
) -> Result<(C::Net, u32), RunError> {
    let t0 = Instant::now();
    let deadline = t0 + opts.link_timeout;
    let mut net = deps.connect.connect().await?;
    if let Some(i) = net.find(name).await? {
        return Ok((net, i));
    }
    let mut next_check = (t0 + opts.module_grace).min(deadline);
    let mut loaded = false;
    loop {
        // No grace (init mode): straight to the device check, without a wait that would only
        // look again (two netlink dumps) and time out at once.
        if loaded || Instant::now() < next_check {
            if let Some(i) = net.wait(name, next_check).await? {
                return Ok((net, i));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            let waited_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
            rep.event(
                Level::Error,
                Event::NoDevice {
                    interface: name.into(),
                    waited_ms,
                },
            );
            return Err(RunError::NoDevice {
                interface: name.into(),
                waited_ms,
            });
        }
        if !loaded && deps.modules.virtio_net_without_driver() {
            load_virtio_net(&deps.modules, rep)?;
            loaded = true;
        }
        next_check = if loaded {
            deadline
        } else {
            (now + MODULE_RECHECK).min(deadline)
        };
    }
}

fn load_virtio_net<M: Modules>(modules: &M, rep: &mut Reporter) -> Result<(), RunError> {
    let t = Instant::now();
    let mut loaded = Vec::new();
    let needed = modules.modules_needed();
    for (i, name) in needed.iter().enumerate() {
        match modules.load_with_deps(name) {
            Ok(list) => loaded.extend(list),
            Err(e) => {
                rep.report.modules_loaded.extend(loaded);
                let e = match e {
                    ModuleError::Missing { module, path } => {
                        rep.event(
                            Level::Error,
                            Event::ModuleMissing {
                                module: module.clone(),
                                path: path.clone(),
                            },
                        );
                        ModuleError::Missing { module, path }
                    }
                    ModuleError::NoModulesDir { kernel, dir, .. } => {
                        no_modules_dir(rep, &needed[i..], kernel, dir)
                    }
                    other => other,
                };
                rep.step("load-modules", false, t.elapsed(), &e.to_string());
                return Err(e.into());
            }
        }
    }
    let detail = if loaded.is_empty() {
        "virtio-net device without a driver; its modules are already loaded".to_string()
    } else {
        format!(
            "virtio-net device without a driver: loaded {}",
            loaded.join(", ")
        )
    };
    rep.step("load-modules", true, t.elapsed(), &detail);
    rep.report.modules_loaded.extend(loaded);
    Ok(())
}

/// The module dir is missing or empty (F1 exactly): every module still needed is missing, each
/// gets its `module-missing` event with the path its file would have, and the error names the
/// last one — `virtio_net`, the driver the device is waiting for.
fn no_modules_dir(
    rep: &mut Reporter,
    missing: &[String],
    kernel: String,
    dir: String,
) -> ModuleError {
    for name in missing {
        rep.event(
            Level::Error,
            Event::ModuleMissing {
                module: name.clone(),
                path: crate::modules::expected_path(Path::new(&dir), name),
            },
        );
    }
    let module = missing
        .last()
        .cloned()
        .unwrap_or_else(|| "virtio_net".to_string());
    ModuleError::NoModulesDir {
        path: crate::modules::expected_path(Path::new(&dir), &module),
        module,
        kernel,
        dir,
    }
}
