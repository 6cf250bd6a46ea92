/**
 * --queue redis://[:password@]host:port/<name>: the Redis server a run's jobs go through and the
 * name of the run's queue. Parsed apart from the queue module so flags are checked without loading
 * the job engine.
 *
 * @module
 */

/** Where a run's queue lives. */
export interface QueueAddress {
  host: string;
  port: number;
  /** The queue's name (BullMQ prefixes its Redis keys with it). */
  name: string;
  password?: string;
  username?: string;
  /** The address without the password, for messages. */
  display: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

/** Parses a --queue value; returns an error message when it is not one. */
export function parseQueueUrl(text: string): QueueAddress | string {
  const want = "expected redis://host:port/<name>";
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `'${text}' is not a URL: ${want}`;
  }
  if (url.protocol !== "redis:") return `'${url.protocol}' is not redis: ${want}`;
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (!host) return `no host in '${text}': ${want}`;
  const port = url.port === "" ? 6379 : Number(url.port);
  const name = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (!NAME.test(name)) {
    return `queue name '${name}' must be 1 to 100 letters, digits, '_', '.' or '-' (${want})`;
  }
  if (url.search || url.hash) return `'${text}' has a query or fragment: ${want}`;
  const out: QueueAddress = {
    host,
    port,
    name,
    display: `redis://${url.host}/${name}`,
  };
  if (url.password) out.password = decodeURIComponent(url.password);
  if (url.username) out.username = decodeURIComponent(url.username);
  return out;
}
