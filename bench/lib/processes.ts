import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

import { join } from 'node:path'
import { ROOT } from './paths.ts'

/** A server under test, in its own process so the load generator never shares its event loop. */
export interface ServerProcess {
  name: string
  pid: number
  port: number
  url: string
  /** The last lines the process wrote (shown when it fails). */
  output: () => string
  rssBytes: () => number
  /** CPU time (user + system) the process has used so far, in ms. */
  cpuMs: () => number
  stop: () => Promise<void>
}

export interface SpawnOptions {
  name: string
  /**
   * Script path relative to the repository root (src/server.ts). It runs as it is, by Node's
   * type stripping, as production runs `node src/server.ts`: no compile step, no loader.
   */
  script: string
  port: number
  env?: Record<string, string>
  nodeArgs?: string[]
}

const running = new Set<ServerProcess>()

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

export async function spawnServer (options: SpawnOptions): Promise<ServerProcess> {
  const child: ChildProcess = spawn(process.execPath, [...(options.nodeArgs ?? []), join(ROOT, options.script)], {
    cwd: ROOT,
    env: { ...process.env, ...options.env, PORT: String(options.port) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const lines: string[] = []
  const keep = (chunk: Buffer): void => {
    lines.push(...chunk.toString('utf8').split('\n').filter(Boolean))
    if (lines.length > 40) lines.splice(0, lines.length - 40)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => { child.once('exit', () => { resolve() }) })
  const server: ServerProcess = {
    name: options.name,
    pid: child.pid ?? -1,
    port: options.port,
    url: `http://127.0.0.1:${options.port}`,
    output: () => lines.join('\n'),
    rssBytes: () => readRss(child.pid ?? -1),
    cpuMs: () => readCpuMs(child.pid ?? -1),
    async stop () {
      running.delete(server)
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const killed = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)])
      if (!killed) {
        child.kill('SIGKILL')
        await exited
      }
    }
  }
  child.once('exit', (code, signal) => {
    if (running.has(server)) process.stderr.write(`\n[bench] ${options.name} exited unexpectedly (code ${code}, signal ${signal})\n${server.output()}\n`)
  })
  running.add(server)
  return server
}

/** Linux: the resident set of a process from /proc (ps would fork per sample). */
export function readRss (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = /VmRSS:\s+(\d+)\s+kB/.exec(status)
  return match === null ? 0 : Number(match[1]) * 1024
}

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100

/** Linux: utime + stime of a process from /proc/<pid>/stat, in ms. */
export function readCpuMs (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 1000 / CLOCK_TICKS
}

/** Polls `check` until it resolves true (server up and answering correctly) or time runs out. */
export async function waitUntil (what: string, check: () => Promise<boolean>, timeoutMs = 60_000, server?: ServerProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      if (await check()) return
    } catch (err) {
      lastError = err
    }
    await sleep(200)
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms: ${String(lastError)}${server === undefined ? '' : `\n--- ${server.name} output ---\n${server.output()}`}`)
}

/** Stops every server still running (on the way out, also after an error). */
export async function stopAll (): Promise<void> {
  await Promise.allSettled([...running].map(async (s) => { await s.stop() }))
}
