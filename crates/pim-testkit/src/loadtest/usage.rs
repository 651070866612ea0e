//! Memory and CPU of a process, and CPU of this process's threads by name, from /proc.

/// Peak (`VmHWM`) and current (`VmRSS`) resident memory of process `pid` (`"self"` for this
/// one), in MB; zeros when /proc cannot be read.
pub fn rss_mb_of(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Peak and current resident memory of this process, in MB.
pub fn rss_mb() -> (f64, f64) {
    rss_mb_of("self")
}

/// The command name and user + system CPU seconds of one `stat` line (of a process or a task).
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    // The name is in parentheses and may hold spaces and parentheses: it ends at the last `)`.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    // USER_HZ is 100 on every Linux we run on.
    Some((name, (ticks(11)? + ticks(12)?) / 100.0))
}

/// CPU seconds (user + system) of process `pid` (`"self"` for this one), all its threads,
/// those that ended included.
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    parse_stat(&stat).map_or(0.0, |(_, seconds)| seconds)
}

/// CPU time of this process (user + system), from /proc/self/stat.
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// CPU seconds of this process's live threads named `name` (a Tokio runtime names all its
/// threads alike). Threads that ended are not counted: /proc keeps no per-thread record of them.
pub fn thread_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| {
            let (comm, seconds) = parse_stat(&stat)?;
            // The kernel keeps the first 15 bytes of a thread's name.
            let kept = &name.as_bytes()[..name.len().min(15)];
            (comm.as_bytes() == kept).then_some(seconds)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_cpu() {
        let line = "4242 (pim (op) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(parse_stat(line), Some(("pim (op) x", 3.0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_and_its_named_threads_are_measured() {
        let spin = std::thread::Builder::new()
            .name("usage-test-spin".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < std::time::Duration::from_millis(300) {
                    x = x.wrapping_add(1);
                }
                std::hint::black_box(x);
                thread_cpu_seconds("usage-test-spin")
            })
            .unwrap();
        let spun = spin.join().unwrap();
        assert!(spun > 0.0, "{spun}");
        assert!(cpu_seconds() >= spun);
        assert!(rss_mb().0 > 0.0);
    }
}
