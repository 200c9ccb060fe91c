import type { FastifyBaseLogger } from 'fastify'
import { AuditLog } from './audit/audit-log.ts'
import { Authenticator, type AuthenticatorOptions } from './auth/authenticator.ts'
import { Bus } from './bus/bus.ts'
import type { Config } from './config.ts'
import { openDatabase, type Database } from './db/client.ts'
import { migrate } from './db/migrate.ts'
import { createMcpServer } from './mcp/mcp-server.ts'
import { MultiplexTransport } from './mcp/transport.ts'

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
  close: () => Promise<void>
}

export interface RuntimeOptions {
  /** Use this database instead of opening one from the config (tests share one). */
  database?: Database
  authenticator?: AuthenticatorOptions
}

export async function startRuntime (config: Config, log: FastifyBaseLogger, options: RuntimeOptions = {}): Promise<Runtime> {
  const database = options.database ?? await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir })
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
    return {
      config,
      log,
      database,
      authenticator,
      bus,
      audit,
      mcpTransport,
      async close () {
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
