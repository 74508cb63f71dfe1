/**
 * Serving as nobody when started as root, as aiosmtpd does (-n turns it off): the handler's setup
 * runs as nobody, the ports are bound as root, then the process drops to nobody for good.
 */

/** The group nobody runs in: Debian's nogroup, else nobody. */
function servingGroup(): string {
  try {
    process.setegid!('nogroup');
    return 'nogroup';
  } catch {
    process.setegid!('nobody');
    return 'nobody';
  }
}

/**
 * Runs the handler's setup as the user the server will serve as, so what it makes (Mailbox's
 * Maildir) belongs to nobody and what nobody could not use fails now, not as 451 per message.
 */
export async function asServingUser<T>(fn: () => Promise<T>): Promise<T> {
  process.setgroups!([servingGroup()]);
  process.seteuid!('nobody');
  try {
    return await fn();
  } finally {
    // Back to root to bind the ports and read the keys: the user first, as only root may set the group.
    process.seteuid!(0);
    process.setegid!(0);
  }
}

export function dropPrivileges(): void {
  // Bound already, as root: now become nobody, so a handler bug cannot act as root.
  const group = servingGroup();
  process.setgid!(group);
  process.setgroups?.([group]);
  process.setuid!('nobody');
}
