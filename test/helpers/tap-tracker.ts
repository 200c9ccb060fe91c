/** tap's process tracker (@tapjs/processinfo): how to start a process without it (lean-test-processes.ts). */

const TRACKER = '/@tapjs/processinfo/'
const TRACKER_ENV = /^_TAPJS_PROCESSINFO_/

/** `env` without the tracker's `--import` in NODE_OPTIONS and without its variables. */
export function withoutTracker (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const lean: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(env)) {
    if (!TRACKER_ENV.test(name)) lean[name] = value
  }
  // The tracker's option is `--import=<file URL>`: one token, since a file URL has no spaces.
  const options = (env.NODE_OPTIONS ?? '').split(' ').filter((token) => token !== '' && !token.includes(TRACKER)).join(' ')
  if (options === '') delete lean.NODE_OPTIONS
  else lean.NODE_OPTIONS = options
  return lean
}

/** Whether this process was started with the tracker. */
export function isTracked (): boolean {
  return process.execArgv.some((arg) => arg.includes(TRACKER))
}
