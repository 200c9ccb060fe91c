import type { FastifyInstance } from 'fastify'
import { appliedMigrationCount, expectedMigrationCount } from '../db/migrate.ts'
import type { ProviderStatus } from '../idp/verifier.ts'
import type { Runtime } from '../runtime.ts'

/**
 * Liveness (the process answers) and readiness (database reachable, migrations applied). An
 * identity provider without keys does not make the replica unready: API tokens and our own
 * OAuth tokens still work, and that provider's tokens get 503 + Retry-After.
 */
export default async function healthRoutes (fastify: FastifyInstance, { runtime }: { runtime: Pick<Runtime, 'database'> & Partial<Pick<Runtime, 'external'>> }): Promise<void> {
  const expected = expectedMigrationCount()
  let migrated = false

  fastify.get('/healthz', async (_request, reply) => {
    return await reply.header('Cache-Control', 'no-store').send({ status: 'ok' })
  })

  fastify.get('/readyz', async (request, reply) => {
    reply.header('Cache-Control', 'no-store')
    try {
      await withTimeout(runtime.database.ping(), 2000)
      if (!migrated) migrated = await appliedMigrationCount(runtime.database) >= expected
    } catch (err) {
      request.log.warn({ err }, 'readiness check failed')
      return await reply.code(503).header('Retry-After', '5').send({ status: 'unavailable', database: 'unreachable' })
    }
    if (!migrated) return await reply.code(503).header('Retry-After', '5').send({ status: 'unavailable', database: 'ok', migrations: 'pending' })
    const providers = runtime.external?.status() ?? []
    return await reply.send({
      status: 'ready',
      database: 'ok',
      migrations: 'applied',
      // Which external identity providers can verify tokens now; one without keys answers its tokens 503.
      ...(providers.length === 0 ? {} : { identity_providers: Object.fromEntries(providers.map((p) => [p.id, providerState(p)])) })
    })
  })
}

function providerState (provider: ProviderStatus): string {
  if (provider.keys === null) return 'introspection'
  if (provider.keys.usable) return `ready (${provider.keys.keys} keys)`
  return `no usable keys: ${provider.keys.error ?? 'not fetched yet'}`
}

async function withTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error('timed out')) }, ms) })
    ])
  } finally {
    clearTimeout(timer)
  }
}
