// /proc readers for the bench: a process and its descendants, their CPU time and memory.
// Linux only; every reader tolerates processes that exit while it reads.
import { readdirSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

/** Clock ticks per second, the unit of utime/stime in /proc/PID/stat. */
export const CLK_TCK = (() => {
  const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
  const n = Number(r.stdout?.trim());
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

/** Fields of /proc/PID/stat after the command name, or null when the process is gone. */
function statFields(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name is in parentheses and may itself contain spaces or ')'.
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** `pid` and every descendant of it that is alive now. */
export function processTree(pid) {
  const children = new Map();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(entry);
    if (!f) continue;
    const ppid = Number(f[1]); // fields after ')': state, ppid, ...
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(Number(entry));
  }
  const tree = [];
  const queue = [pid];
  while (queue.length) {
    const p = queue.shift();
    tree.push(p);
    for (const c of children.get(p) ?? []) queue.push(c);
  }
  return tree.filter((p) => statFields(p) !== null);
}

/** utime + stime, in seconds, summed over the given processes (zombies and the dead count 0). */
export function cpuSeconds(pids) {
  let ticks = 0;
  for (const pid of pids) {
    const f = statFields(pid);
    if (f) ticks += Number(f[11]) + Number(f[12]); // stat fields 14 and 15
  }
  return ticks / CLK_TCK;
}

/** A kB field of /proc/PID/status (VmRSS, VmHWM, ...) summed over the given processes. */
export function statusKb(pids, field) {
  let total = 0;
  for (const pid of pids) {
    try {
      const m = readFileSync(`/proc/${pid}/status`, 'latin1').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
      if (m) total += Number(m[1]);
    } catch {
      // gone
    }
  }
  return total;
}

/** True while `pid` exists and is not a zombie. */
export function isAlive(pid) {
  const f = statFields(pid);
  return f !== null && f[0] !== 'Z';
}

/** Busy and total CPU time of the whole machine so far, in seconds (from /proc/stat). */
export function machineCpu() {
  const f = readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  const busy = user + nice + system + irq + softirq + (steal || 0);
  return { busy: busy / CLK_TCK, total: (busy + idle + (iowait || 0)) / CLK_TCK };
}

/** CPU time of this process and of its children that have been waited for, in seconds. */
export function selfAndChildrenCpu() {
  const f = statFields(process.pid);
  if (!f) return { self: 0, children: 0 };
  return { self: (Number(f[11]) + Number(f[12])) / CLK_TCK, children: (Number(f[13]) + Number(f[14])) / CLK_TCK };
}
