import { awayMessage, clock } from '../src/awaywords';

describe('the notice while the history store is away', () => {
  it('says since when, in local time, that saves are still merged, and that they will be recorded', () => {
    const since = new Date(2026, 11, 5, 9, 3, 27).toISOString(); // 09:03 local
    expect(awayMessage({ reason: 'cannot reach the PostgreSQL store', since })).toBe(
      'History store unreachable since 09:03 — saves are still merged on this server and will be recorded when it is back'
    );
  });

  it('leaves the time out when the server does not know it', () => {
    expect(awayMessage({ reason: 'catching up', since: null })).toBe(
      'History store unreachable — saves are still merged on this server and will be recorded when it is back'
    );
    expect(clock('not a time')).toBeNull();
  });
});
