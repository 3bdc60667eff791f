/** The words of the notice shown while the history store is away (``away.ts``). */

/** What the state route says while the store is away. */
export interface IDegraded {
  reason: string;
  /** ISO 8601 (UTC); null when the server does not know (a catch-up waiting its turn). */
  since: string | null;
  spooled?: number | null;
}

/** "09:03": the local time of ``since``, as the notice shows it. */
export function clock(since: string | null): string | null {
  if (!since) {
    return null;
  }
  const when = new Date(since);
  if (isNaN(when.getTime())) {
    return null;
  }
  const two = (n: number) => String(n).padStart(2, '0');
  return `${two(when.getHours())}:${two(when.getMinutes())}`;
}

/** The words of the notice. */
export function awayMessage(degraded: IDegraded): string {
  const at = clock(degraded.since);
  return (
    `History store unreachable${at ? ` since ${at}` : ''} — saves are still merged on this server ` +
    'and will be recorded when it is back'
  );
}
