import type { FastifyBaseLogger } from 'fastify'
import { AuditLog } from './audit/audit-log.ts'
import { Authenticator, type AuthenticatorOptions } from './auth/authenticator.ts'
import { Bus } from './bus/bus.ts'
import type { Config } from './config.ts'
import { openDatabase, type Database } from './db/client.ts'
import { migrate } from './db/migrate.ts'
import { createMcpServer, createToolCaller, type ToolCaller } from './mcp/mcp-server.ts'
import { MultiplexTransport } from './mcp/transport.ts'
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
  mcpTransport: MultiplexTransport
  /** The tools/call handler the SDK server uses, for /mcp's direct path. */
  callTool: ToolCaller
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
    const server = createMcpServer({ bus, audit, log })
    const mcpTransport = new MultiplexTransport()
    await server.connect(mcpTransport)
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
      mcpTransport,
      callTool: createToolCaller({ bus, audit, log }),
      metrics,
      async close () {
        await maintenance.stop()
        await bus.stop()
        await server.close()
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
