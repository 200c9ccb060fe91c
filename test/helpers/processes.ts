import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Teardown } from './database.ts'
import { freePort } from './server.ts'

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface ServerProcess {
  child: ChildProcess
  port: number
  adminPort: number
  url: string
  adminUrl: string
  output: () => string
  /** SIGTERM and wait; resolves with the exit code. */
  stop: () => Promise<number | null>
  kill: (signal?: NodeJS.Signals) => void
  exited: Promise<number | null>
}

/** Runs `bin/server.js` as its own process (as `npm start` does), resolved once /healthz answers. */
export async function startServerProcess (t: Teardown, env: Record<string, string>): Promise<ServerProcess> {
  const port = await freePort()
  const adminPort = await freePort()
  const child = spawn(process.execPath, ['bin/server.js'], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '', PORT: String(port), ADMIN_PORT: String(adminPort), HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => { resolve(code) }))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${output}`)
    try {
      if ((await fetch(`${url}/healthz`)).ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`server did not start within 60 s: ${output}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    child,
    port,
    adminPort,
    url,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    output: () => output,
    kill: (signal = 'SIGKILL') => { child.kill(signal) },
    exited,
    stop: async () => {
      child.kill('SIGTERM')
      return await exited
    }
  }
}

/** POST to a server process's admin API. */
export async function admin<T = any> (server: { adminUrl: string }, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${server.adminUrl}/${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  if (!response.ok) throw new Error(`admin ${path}: ${response.status} ${await response.text()}`)
  return await response.json() as T
}
