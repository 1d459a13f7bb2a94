//! Which core each process runs on. With fewer cores than processes, cores are shared
//! and the supervisor says so; pinning still keeps each process off the others' caches
//! as far as the host allows.

use super::plan::CoreChoice;

/// Core ids this process may run on (its affinity mask), ascending.
pub fn available_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// `0-3,6` style list.
pub fn describe(cores: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let mut j = i;
        while j + 1 < cores.len() && cores[j + 1] == cores[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cores[i].to_string()
        } else {
            format!("{}-{}", cores[i], cores[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

/// Hands out cores: listed ones as asked, `auto` ones round-robin over the available
/// cores, starting after the last core handed out so neighbours spread.
pub struct CoreAssigner {
    available: Vec<usize>,
    next: usize,
    /// How many processes each core got.
    load: Vec<usize>,
}

impl CoreAssigner {
    pub fn new() -> CoreAssigner {
        let available = available_cores();
        let load = vec![0; available.iter().max().map_or(1, |m| m + 1)];
        CoreAssigner {
            available,
            next: 0,
            load,
        }
    }

    /// The core for worker `worker` of a stage with `choice`; `None` when the host
    /// reports no cores (the process then runs unpinned).
    pub fn assign(&mut self, choice: &CoreChoice, worker: u32) -> Option<usize> {
        let core = match choice {
            CoreChoice::List(list) => list[worker as usize % list.len()],
            CoreChoice::Auto => {
                let core = *self
                    .available
                    .get(self.next % self.available.len().max(1))?;
                self.next += 1;
                core
            }
        };
        if let Some(l) = self.load.get_mut(core) {
            *l += 1;
        }
        Some(core)
    }

    /// `core 0 is shared` or `cores 0-3 are shared` when some core runs more than one
    /// process, else `None`.
    pub fn shared_cores(&self) -> Option<String> {
        let shared: Vec<usize> = (0..self.load.len()).filter(|&c| self.load[c] > 1).collect();
        match shared.len() {
            0 => None,
            1 => Some(format!("core {} is shared", shared[0])),
            _ => Some(format!("cores {} are shared", describe(&shared))),
        }
    }

    /// Cores this process may run on.
    pub fn available(&self) -> usize {
        self.available.len()
    }
}

impl Default for CoreAssigner {
    fn default() -> Self {
        CoreAssigner::new()
    }
}

/// Pins the calling process to `core`; false if the kernel refused.
pub fn pin_to(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_ranges() {
        assert_eq!(describe(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(describe(&[]), "none");
        assert_eq!(describe(&[5]), "5");
    }

    #[test]
    fn more_workers_than_cores_share_and_say_so() {
        let mut a = CoreAssigner::new();
        let n = a.available.len() + 1;
        let cores: Vec<_> = (0..n)
            .map(|w| a.assign(&CoreChoice::Auto, w as u32))
            .collect();
        assert!(cores.iter().all(Option::is_some));
        assert!(a.shared_cores().is_some());
    }

    #[test]
    fn one_shared_core_is_named_in_the_singular() {
        let mut a = CoreAssigner::new();
        let one = CoreChoice::List(vec![0]);
        a.assign(&one, 0);
        assert_eq!(a.shared_cores(), None);
        a.assign(&one, 1);
        assert_eq!(a.shared_cores().as_deref(), Some("core 0 is shared"));
    }
}
