import type { FastifyInstance } from 'fastify'
import { appliedMigrationCount, expectedMigrationCount } from '../db/migrate.ts'
import type { Runtime } from '../runtime.ts'

/** Liveness (the process answers) and readiness (database reachable, migrations applied). */
export default async function healthRoutes (fastify: FastifyInstance, { runtime }: { runtime: Pick<Runtime, 'database'> }): Promise<void> {
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
    return await reply.send({ status: 'ready', database: 'ok', migrations: 'applied' })
  })
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
