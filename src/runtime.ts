import type { FastifyBaseLogger } from 'fastify'
import { AuditLog } from './audit/audit-log.ts'
import { Authenticator, type AuthenticatorOptions } from './auth/authenticator.ts'
import { Bus } from './bus/bus.ts'
import type { Config } from './config.ts'
import { openDatabase, type Database } from './db/client.ts'
import { migrate } from './db/migrate.ts'
import { SdkEndpoint } from './mcp/sdk-server.ts'
import { createToolCaller, type ToolCaller } from './mcp/tool-call.ts'
import { Maintenance } from './operations/maintenance.ts'
import { Metrics } from './operations/metrics.ts'

/**
 * Everything both listeners (public and admin) share: the database and the services built on
 * it. Owned by server.ts (or a test), which closes it after closing the listeners.
 */
export interface Runtime {
  config: Config
  log: FastifyBaseLogger
  database: Database
  authenticator: Authenticator
  bus: Bus
  audit: AuditLog
  /** The tools/call handler: /mcp's direct path and the SDK servers both run it. */
  callTool: ToolCaller
  /** The SDK v2 side of /mcp (everything but the direct tools/call path). */
  mcp: SdkEndpoint
  metrics: Metrics
  close: () => Promise<void>
}

/** PostgreSQL connections per process: long-polls hold none (they wait on LISTEN), so few suffice. */
const DATABASE_POOL_SIZE = 10

export interface RuntimeOptions {
  /** Use this database instead of opening one from the config (tests share one). */
  database?: Database
  authenticator?: AuthenticatorOptions
  /** Run the periodic purge (default true; tests call purgeOnce themselves). */
  maintenance?: boolean
}

export async function startRuntime (config: Config, log: FastifyBaseLogger, options: RuntimeOptions = {}): Promise<Runtime> {
  const database = options.database ?? await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: DATABASE_POOL_SIZE })
  try {
    await migrate(database, config.databaseUrl)
    const authenticator = new Authenticator(database, { ...options.authenticator, resourceUrl: config.resourceUrl })
    const bus = new Bus(database)
    const audit = new AuditLog(database, log)
    await authenticator.start()
    await bus.start()
    const callTool = createToolCaller({ bus, audit, log })
    const mcp = new SdkEndpoint(callTool)
    const metrics = new Metrics({
      waitingLongPolls: () => bus.waiters.size,
      cachedCredentials: () => authenticator.cacheSize,
      databasePoolMax: database.kind === 'postgres' ? DATABASE_POOL_SIZE : 1,
      databaseKind: database.kind
    })
    audit.observe((entry) => { metrics.observeAudit(entry) })
    const maintenance = new Maintenance(database, config, log)
    if (options.maintenance !== false) maintenance.start()
    return {
      config,
      log,
      database,
      authenticator,
      bus,
      audit,
      callTool,
      mcp,
      metrics,
      async close () {
        await maintenance.stop()
        await bus.stop()
        await mcp.close()
        await authenticator.stop()
        await audit.flush()
        if (options.database === undefined) await database.close()
      }
    }
  } catch (err) {
    if (options.database === undefined) await database.close().catch(() => {})
    throw err
  }
}
