import { randomBytes } from 'node:crypto'
import { createBenchDatabase } from './lib/database.ts'
import { BENCH_PROVIDER, BENCH_SUBJECT, startBenchIssuer } from './lib/issuer.ts'
import { admin, apiTokenFor, startOurServer } from './lib/ours.ts'
import { freePort, spawnServer, waitUntil, type ServerProcess } from './lib/processes.ts'
import { callTool } from './lib/rpc.ts'
import type { Rig } from './targets.ts'

export interface RigOptions {
  connections: number
  /** Extra node arguments per server name (e.g. --cpu-prof for --profile). */
  nodeArgs?: (name: string) => string[]
  log: (line: string) => void
}

async function startReference (name: string, script: string, token: string, nodeArgs: string[]): Promise<ServerProcess> {
  const server = await spawnServer({ name, script, port: await freePort(), nodeArgs, env: { BENCH_TOKEN: token } })
  await waitUntil(name, async () => !(await callTool(`${server.url}/mcp`, token, 'whoami')).isError, 30_000, server)
  return server
}

/**
 * Everything a default run measures, each in its own process: the three reference servers
 * (ceiling, SDK v1 anchor, SDK v2 anchor), and two replicas of ours sharing a fresh PostgreSQL
 * database (dropped by the caller at the end).
 */
export async function startRig (options: RigOptions): Promise<Rig> {
  const args = options.nodeArgs ?? (() => [])
  const database = await createBenchDatabase()
  options.log(`database ${database.name}`)
  const referenceToken = randomBytes(32).toString('base64url')
  // Both replicas accept an external identity provider's tokens, as a deployment with IDP_FILE does.
  const issuer = await startBenchIssuer()
  const env = { IDP_FILE: issuer.idpFile }
  // Replica A migrates the new database; B starts once it has.
  const replicaA = await startOurServer('replica-a', database.url, args('replica-a'), env)
  const [replicaB, ceiling, anchorV1, anchorV2] = await Promise.all([
    startOurServer('replica-b', database.url, args('replica-b'), env),
    startReference('ceiling', 'bench/servers/ceiling.ts', referenceToken, args('ceiling')),
    startReference('anchor-v1', 'bench/servers/anchor.ts', referenceToken, args('anchor-v1')),
    startReference('anchor-v2', 'bench/servers/anchor-v2.ts', referenceToken, args('anchor-v2'))
  ])
  options.log(`servers  replica-a pid ${replicaA.pid}, replica-b pid ${replicaB.pid}, ceiling pid ${ceiling.pid}, anchor-v1 pid ${anchorV1.pid}, anchor-v2 pid ${anchorV2.pid}`)
  const apiToken = await apiTokenFor(replicaA, 'bench')
  await admin(replicaA, '/identities', { provider: BENCH_PROVIDER, subject: BENCH_SUBJECT, principal: 'bench' })
  const externalToken = await issuer.token()
  return { connections: options.connections, referenceToken, ceiling, anchorV1, anchorV2, replicaA, replicaB, apiToken, externalToken }
}
