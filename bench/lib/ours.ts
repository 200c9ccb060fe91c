import { freePort, spawnServer, waitUntil, type ServerProcess } from './processes.ts'
import { callTool } from './rpc.ts'

export interface OurServer extends ServerProcess {
  mcpUrl: string
  adminUrl: string
}

/**
 * The real server (bin/server.js, as `npm start` runs it) in its own process on a PostgreSQL
 * database, with rate limits off (RATE_LIMIT_MULTIPLIER=0) and LOG_LEVEL=warn.
 */
export async function startOurServer (name: string, databaseUrl: string, nodeArgs: string[] = [], env: Record<string, string> = {}): Promise<OurServer> {
  const port = await freePort()
  const adminPort = await freePort()
  const process = await spawnServer({
    name,
    script: 'bin/server.js',
    port,
    nodeArgs,
    env: {
      HOST: '127.0.0.1',
      ADMIN_HOST: '127.0.0.1',
      ADMIN_PORT: String(adminPort),
      // The bench talks to the admin API without a token (it listens on loopback only).
      ADMIN_TOKEN: '',
      PUBLIC_URL: `http://localhost:${port}`,
      DATABASE_URL: databaseUrl,
      RATE_LIMIT_MULTIPLIER: '0',
      LOG_LEVEL: 'warn',
      ...env
    }
  })
  const server: OurServer = { ...process, mcpUrl: `${process.url}/mcp`, adminUrl: `http://127.0.0.1:${adminPort}` }
  await waitUntil(name, async () => (await fetch(`${server.url}/readyz`)).status === 200, 90_000, server)
  await waitUntil(`${name} admin`, async () => (await fetch(`${server.adminUrl}/healthz`)).status === 200, 30_000, server)
  return server
}

/** POST to the admin API; an existing principal (409) is fine, any other refusal throws. */
export async function admin (server: OurServer, path: string, body: unknown): Promise<any> {
  const response = await fetch(`${server.adminUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  const data = await response.json() as any
  if (response.status >= 300 && !(response.status === 409 && path === '/principals')) {
    throw new Error(`admin POST ${path}: HTTP ${response.status} ${JSON.stringify(data)}`)
  }
  return data
}

/** A principal (created if new) and a fresh API token for it, through the admin API. */
export async function apiTokenFor (server: OurServer, principal: string, scopes = 'bus:read bus:write'): Promise<string> {
  await admin(server, '/principals', { name: principal, scopes })
  const issued = await admin(server, '/tokens', { principal, scopes, label: 'bench' })
  return issued.token as string
}

/** Posts `count` messages to a channel (creating it); returns the last id. */
export async function seedChannel (server: OurServer, token: string, channel: string, count: number): Promise<number> {
  let last = 0
  for (let i = 0; i < count; i++) {
    const sent = await callTool(server.mcpUrl, token, 'bus_send', { channel, body: `seed ${i}` })
    if (sent.isError) throw new Error(`seeding ${channel}: ${JSON.stringify(sent.data)}`)
    last = sent.data.id as number
  }
  return last
}
