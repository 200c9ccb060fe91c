import { execFile, fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Teardown } from './database.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
// Generous: migrate on a fresh embedded database runs initdb, tens of seconds on a loaded machine.
const RUN_TIMEOUT_MS = 150_000

export interface Run { code: number, stdout: string, stderr: string }
export type Cli = (args: string[], env?: Record<string, string | undefined>) => Promise<Run>

/**
 * The environment a command gets: this process's, without the variables the CLI reads (so the
 * developer's own BUS_ADMIN_URL cannot leak in), plus `env` (undefined removes a variable).
 */
function commandEnv (env: Record<string, string | undefined>): Record<string, string> {
  const merged: Record<string, string | undefined> = { ...process.env, BUS_ADMIN_TOKEN: undefined, BUS_ADMIN_URL: undefined, DATABASE_URL: undefined, DATA_DIR: undefined, ...env }
  const clean: Record<string, string> = {}
  for (const [key, value] of Object.entries(merged)) if (value !== undefined) clean[key] = value
  return clean
}

/** `bus-mcp …` as its own process, as a user runs it: `node bin/bus-mcp.js …` (the launcher, then src/cli.ts). */
export const cliProcess: Cli = async (args, env = {}) => await new Promise((resolve) => {
  execFile(process.execPath, ['bin/bus-mcp.js', ...args], { cwd: ROOT, env: commandEnv(env), timeout: RUN_TIMEOUT_MS }, (error, stdout, stderr) => {
    const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1
    resolve({ code, stdout, stderr })
  })
})

/**
 * `bus-mcp …` run by one long-lived Node process (test/helpers/cli-host.ts): src/cli.ts evaluated
 * afresh for every command, with the command's argv and environment, its stdout, stderr and exit
 * code captured. Much faster than a process per command; `cliProcess` checks it answers the same.
 * The host ends at teardown.
 */
export async function startCliHost (t: Teardown): Promise<Cli> {
  const host: ChildProcess = fork(fileURLToPath(new URL('./cli-host.ts', import.meta.url)), [], {
    cwd: ROOT, env: commandEnv({}), execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  })
  const pending = new Map<number, { resolve: (run: Run) => void, reject: (err: Error) => void, timer: NodeJS.Timeout }>()
  let ended: Error | undefined
  const failAll = (err: Error): void => {
    ended = err
    for (const { reject, timer } of pending.values()) { clearTimeout(timer); reject(err) }
    pending.clear()
  }
  host.on('exit', (code, signal) => { failAll(new Error(`the CLI host exited (${signal ?? code ?? '?'})`)) })
  host.on('error', (err) => { failAll(err) })
  await new Promise<void>((resolve, reject) => {
    host.once('message', () => { resolve() })
    host.once('exit', (code) => { reject(new Error(`the CLI host did not start (exit ${code ?? '?'})`)) })
  })
  host.on('message', (message: Run & { id: number }) => {
    const waiting = pending.get(message.id)
    if (waiting === undefined) return
    pending.delete(message.id)
    clearTimeout(waiting.timer)
    waiting.resolve({ code: message.code, stdout: message.stdout, stderr: message.stderr })
  })
  t.teardown(() => {
    host.removeAllListeners('exit')
    if (host.connected) host.disconnect()
    if (host.exitCode === null) host.kill()
  })
  let next = 0
  return async (args, env = {}) => await new Promise<Run>((resolve, reject) => {
    if (ended !== undefined) { reject(ended); return }
    const id = ++next
    const timer = setTimeout(() => {
      pending.delete(id)
      reject(new Error(`bus-mcp ${args.join(' ')}: no answer from the CLI host within ${RUN_TIMEOUT_MS} ms`))
    }, RUN_TIMEOUT_MS)
    pending.set(id, { resolve, reject, timer })
    host.send({ id, args, env: commandEnv(env) })
  })
}
