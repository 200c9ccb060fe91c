import Fastify, { type FastifyInstance } from 'fastify'
import { trackConnections } from './lib/connections.ts'
import mcpRoutes from './mcp/plugin.ts'
import oauthRoutes from './oauth/plugin.ts'
import { requestMetrics } from './operations/metrics.ts'
import errorReplies from './plugins/errors.ts'
import healthRoutes from './plugins/health.ts'
import homePage from './plugins/home.ts'
import type { Runtime } from './runtime.ts'

/**
 * The public listener's root plugin. Plugins are registered in the order a request meets
 * them; each route plugin is encapsulated, so its hooks (like /mcp's auth) stay inside it.
 * Never listens: server.ts (or a test) does.
 */
export default async function app (fastify: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  await fastify.register(requestMetrics, { metrics: runtime.metrics })
  await fastify.register(errorReplies)
  await fastify.register(healthRoutes, { runtime })
  await fastify.register(homePage, { config: runtime.config })
  await fastify.register(oauthRoutes, { runtime })
  await fastify.register(mcpRoutes, { runtime })
}

/** A Fastify instance for the public listener with the options production uses. */
export async function buildApp (runtime: Runtime): Promise<FastifyInstance> {
  const fastify = Fastify({
    loggerInstance: runtime.log,
    trustProxy: runtime.config.trustProxy,
    bodyLimit: 1024 * 1024,
    // Long-polls hold a request up to 25 s; keep-alive outlives proxies' idle timeouts.
    keepAliveTimeout: 75_000,
    requestTimeout: 120_000,
    routerOptions: { ignoreTrailingSlash: true },
    return503OnClosing: true
  })
  const connections = trackConnections(fastify.server)
  fastify.addHook('preClose', async () => { connections.drain() })
  await fastify.register(app, { runtime })
  return fastify
}
