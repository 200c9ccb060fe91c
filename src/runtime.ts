import type { FastifyBaseLogger } from 'fastify'
import { AuditLog } from './audit/audit-log.ts'
import { Authenticator, type AuthenticatorOptions } from './auth/authenticator.ts'
import { Bus } from './bus/bus.ts'
import { BusEvents } from './bus/events.ts'
import type { Config } from './config.ts'
import { openDatabase, type Database } from './db/client.ts'
import { migrate } from './db/migrate.ts'
import { ExternalVerifier, type ExternalVerifierOptions } from './idp/verifier.ts'
import { PendingCalls } from './mcp/cancellation.ts'
import { ListenHub, type ListenHubOptions } from './mcp/listen.ts'
import { BusResources } from './mcp/resources.ts'
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
  /** Access tokens of the identity providers in IDP_FILE (none configured: it refuses everything). */
  external: ExternalVerifier
  bus: Bus
  /** Bus events from every replica (LISTEN/NOTIFY): long-polls and listen streams hear sends here. */
  events: BusEvents
  /** subscriptions/listen streams open on this replica. */
  listen: ListenHub
  /** Long-polls in flight, for 2025-era notifications/cancelled (from any replica). */
  pending: PendingCalls
  audit: AuditLog
  /** The tools/call handler: /mcp's direct path and the SDK servers both run it. */
  callTool: ToolCaller
  /** The SDK v2 side of /mcp (everything but the direct tools/call path). */
  mcp: SdkEndpoint
  metrics: Metrics
  /**
   * The first step of a shutdown, before the listeners close: long-polls answer now with what
   * they have and listen streams end gracefully, so closing does not wait for them.
   */
  release: () => void
  close: () => Promise<void>
}

/** What the OAuth endpoints use of the runtime. */
export type OAuthRuntime = Pick<Runtime, 'config' | 'database' | 'audit'>

/** PostgreSQL connections per process: long-polls hold none (they wait on LISTEN), so few suffice. */
const DATABASE_POOL_SIZE = 10

export interface RuntimeOptions {
  /** Use this database instead of opening one from the config (tests share one). */
  database?: Database
  authenticator?: AuthenticatorOptions
  /** External-token settings (tests shorten key refresh intervals). */
  external?: ExternalVerifierOptions
  /** Run the periodic purge (default true; tests call purgeOnce themselves). */
  maintenance?: boolean
  /** Listen-stream settings beyond MAX_LISTEN_STREAMS (tests shorten keep-alives and re-checks). */
  listen?: Partial<ListenHubOptions>
}

export async function startRuntime (config: Config, log: FastifyBaseLogger, options: RuntimeOptions = {}): Promise<Runtime> {
  const database = options.database ?? await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, poolSize: DATABASE_POOL_SIZE })
  try {
    await migrate(database, config.databaseUrl)
    const authenticator = new Authenticator(database, { ...options.authenticator, resourceUrl: config.resourceUrl })
    const external = new ExternalVerifier(database, config.identityProviders, log, options.external)
    // Unlinking an identity or disabling its principal drops verified external tokens too.
    authenticator.onInvalidate(() => { external.invalidate() })
    const events = new BusEvents(database, (err) => { log.warn({ err }, 'could not publish a bus event') })
    const bus = new Bus(database, events)
    const audit = new AuditLog(database, log)
    const listen = new ListenHub(events, authenticator, log, { maxStreams: config.maxListenStreams, ...options.listen })
    await authenticator.start()
    await external.start()
    bus.start()
    listen.start()
    await events.start()
    const pending = new PendingCalls(database)
    await pending.start()
    const callTool = createToolCaller({ bus, audit, log })
    const mcp = new SdkEndpoint(callTool, new BusResources(bus), log)
    const metrics = new Metrics({
      waitingLongPolls: () => bus.waiters.size,
      openListenStreams: () => listen.size,
      cachedCredentials: () => authenticator.cacheSize + external.cacheSize,
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
      external,
      bus,
      events,
      listen,
      pending,
      audit,
      callTool,
      mcp,
      metrics,
      release () {
        bus.stop()
        listen.close()
      },
      async close () {
        await maintenance.stop()
        bus.stop()
        listen.close()
        await pending.stop()
        await events.stop()
        await mcp.close()
        await authenticator.stop()
        external.stop()
        await audit.flush()
        if (options.database === undefined) await database.close()
      }
    }
  } catch (err) {
    if (options.database === undefined) await database.close().catch(() => {})
    throw err
  }
}
