/**
 * ``nbmergesave:store-away``: while the server's history store is away (its
 * database down, its driver missing, its folder not writable), a calm,
 * persistent notice says so, and that saves are still merged; it goes when
 * the store is back. The server says so in its state route (``degraded``),
 * which open notebooks ask anyway.
 *
 * Kept in a module of its own; its words are in ``awaywords.ts`` (tested without a browser).
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';

import { IDegraded, awayMessage } from './awaywords';

/** How often the notice asks whether the store is away, or back (ms). */
const POLL = 2000;

async function degradedFor(path: string): Promise<IDegraded | null | undefined> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbmergesave', 'api', 'state') + URLExt.objectToQueryString({ path });
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    return undefined; // no answer about the store: leave the notice as it is
  }
  return ((await response.json()) as { degraded?: IDegraded | null }).degraded ?? null;
}

export const storeAway: JupyterFrontEndPlugin<void> = {
  id: 'nbmergesave:store-away',
  description: 'A persistent notice while the history store is away (saves are still merged).',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    let shown: string | null = null; // the notification's id
    let words = '';
    const check = async () => {
      const paths = new Set<string>();
      tracker.forEach(panel => paths.add(panel.context.path));
      const first = paths.values().next();
      if (first.done) {
        return; // the state route answers about a notebook; none is open
      }
      const degraded = await degradedFor(first.value);
      if (degraded === undefined) {
        return;
      }
      if (degraded) {
        const message = awayMessage(degraded);
        if (shown === null || message !== words) {
          if (shown !== null) {
            Notification.dismiss(shown);
          }
          shown = Notification.warning(message, { autoClose: false });
          words = message;
        }
      } else if (shown !== null) {
        Notification.dismiss(shown);
        shown = null;
        words = '';
      }
    };
    window.setInterval(() => void check().catch(() => undefined), POLL);
    tracker.currentChanged.connect(() => void check().catch(() => undefined));
  }
};
