import { AjvCompiler } from '@fastify/ajv-compiler'
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify'
import { desc } from 'drizzle-orm'
import { parseBearer } from '../auth/bearer.ts'
import { auditLog } from '../db/schema.ts'
import { classifyAndLog } from '../lib/errors.ts'
import { InputError } from '../lib/input-error.ts'
import { constantEquals } from '../lib/secrets.ts'
import {
  createPrincipal, issueApiToken, listApiTokens, listPrincipals, revokeApiToken, setPrincipalDisabled
} from '../principals/store.ts'
import type { Runtime } from '../runtime.ts'
import { createPreregisteredClient, registrationResponse, removeClient } from '../oauth/client-store.ts'
import { CLIENT_METADATA_LIMITS } from '../oauth/client-metadata.ts'
import { listClients } from './client-views.ts'
import { createLoginCode } from '../oauth/consent-store.ts'
import { listGrants, revokeGrantByAdmin } from './grant-views.ts'
import { checkKnownProvider, linkIdentity, listIdentities, MAX_SUBJECT_LENGTH, unlinkIdentity } from '../idp/identities.ts'

const nameParam = { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 64 } } } as const
// Ids are bigints; beyond 2^53 a JSON number cannot name one exactly, and beyond 2^63 the query would fail.
const idParam = { type: 'object', required: ['id'], properties: { id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } } as const
const scopesValue = { anyOf: [{ type: 'string', maxLength: 200 }, { type: 'array', maxItems: 10, items: { type: 'string', maxLength: 64 } }] } as const

/**
 * The routes' request schemas. They are module constants, and every admin app in the process
 * validates with one compiler (`sharedValidators`), so each schema is compiled once per process
 * rather than once per app: a test file builds several (decision 0035).
 */
const schemas = {
  principalBody: {
    type: 'object',
    required: ['name'],
    additionalProperties: false,
    properties: { name: { type: 'string', maxLength: 64 }, scopes: scopesValue }
  },
  tokensQuery: { type: 'object', additionalProperties: false, properties: { principal: { type: 'string', maxLength: 64 } } },
  tokenBody: {
    type: 'object',
    required: ['principal'],
    additionalProperties: false,
    properties: {
      principal: { type: 'string', maxLength: 64 },
      scopes: scopesValue,
      label: { type: 'string', maxLength: 200 },
      expires_in: { type: 'integer' }
    }
  },
  clientBody: {
    type: 'object',
    required: ['name'],
    additionalProperties: false,
    properties: {
      name: { type: 'string', maxLength: CLIENT_METADATA_LIMITS.clientName },
      redirect_uris: { type: 'array', maxItems: CLIENT_METADATA_LIMITS.redirectUris, items: { type: 'string', maxLength: CLIENT_METADATA_LIMITS.stringLength } },
      principal: { type: 'string', maxLength: 64 },
      confidential: { type: 'boolean' },
      scopes: { type: 'string', maxLength: 200 }
    }
  },
  clientIdParam: { type: 'object', required: ['clientId'], properties: { clientId: { type: 'string', minLength: 1, maxLength: 2000 } } },
  grantsQuery: { type: 'object', additionalProperties: false, properties: { principal: { type: 'string', maxLength: 64 }, client: { type: 'string', maxLength: 2000 } } },
  identitiesQuery: { type: 'object', additionalProperties: false, properties: { provider: { type: 'string', maxLength: 64 } } },
  identityBody: {
    type: 'object',
    required: ['provider', 'subject', 'principal'],
    additionalProperties: false,
    properties: {
      provider: { type: 'string', maxLength: 64 },
      subject: { type: 'string', maxLength: MAX_SUBJECT_LENGTH },
      principal: { type: 'string', maxLength: 64 }
    }
  },
  loginCodeBody: { type: 'object', required: ['principal'], additionalProperties: false, properties: { principal: { type: 'string', maxLength: 64 } } },
  auditQuery: { type: 'object', additionalProperties: false, properties: { limit: { type: 'integer', minimum: 1, maximum: 10000 } } }
} as const

/** Fastify's own validator compiler (the one it would make per app), shared by every admin app. */
const sharedValidators = AjvCompiler()

/**
 * The admin API: a second listener on loopback (or behind ADMIN_TOKEN), never routed through
 * the proxy. The CLI is its client, so the CLI works the same with the embedded database
 * (which only this process may open) and with PostgreSQL.
 */
export async function adminRoutes (fastify: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  const { config, database, audit } = runtime
  const db = database.db

  fastify.addHook('onRequest', async (request, reply) => {
    if (config.adminToken === undefined) return
    const bearer = parseBearer(request.headers.authorization)
    if (bearer.status !== 'ok' || !constantEquals(bearer.token, config.adminToken, 64)) {
      return await reply.code(401).header('WWW-Authenticate', 'Bearer realm="bus-mcp admin"')
        .send({ error: 'unauthorized', message: 'the admin API needs Authorization: Bearer <ADMIN_TOKEN> (the CLI reads BUS_ADMIN_TOKEN)' })
    }
  })

  // PostgreSQL text cannot hold NUL: refuse it in any name, id or value before a query fails on it.
  fastify.addHook('preValidation', async (request, reply) => {
    if (holdsNul(request.params) || holdsNul(request.query) || holdsNul(request.body)) {
      return await reply.code(400).send({ error: 'invalid_request', message: 'values must not contain NUL (\\u0000) characters' })
    }
  })

  const record = (action: string, detail: string): void => {
    audit.record({ kind: 'admin', action, outcome: 'ok', detail })
  }

  fastify.get('/healthz', async () => ({ status: 'ok' }))

  fastify.get('/metrics', async (_request, reply) => {
    return await reply.header('Content-Type', runtime.metrics.registry.contentType).send(await runtime.metrics.registry.metrics())
  })

  fastify.get('/principals', async () => ({ principals: await listPrincipals(db) }))

  fastify.post<{ Body: { name: string, scopes?: string | string[] } }>('/principals', {
    schema: { body: schemas.principalBody }
  }, async (request, reply) => {
    const principal = await createPrincipal(db, request.body.name, request.body.scopes)
    record('principal.add', principal.name)
    return await reply.code(201).send(principal)
  })

  for (const [action, disabled] of [['disable', true], ['enable', false]] as const) {
    fastify.post<{ Params: { name: string } }>(`/principals/:name/${action}`, { schema: { params: nameParam } }, async (request) => {
      const principal = await setPrincipalDisabled(db, request.params.name, disabled)
      record(`principal.${action}`, principal.name)
      return principal
    })
  }

  fastify.get<{ Querystring: { principal?: string } }>('/tokens', {
    schema: { querystring: schemas.tokensQuery }
  }, async (request) => ({ tokens: await listApiTokens(db, request.query.principal) }))

  fastify.post<{ Body: { principal: string, scopes?: string | string[], label?: string, expires_in?: number } }>('/tokens', {
    schema: { body: schemas.tokenBody }
  }, async (request, reply) => {
    const { principal, scopes, label, expires_in: expiresIn } = request.body
    const issued = await issueApiToken(db, { principal, scopes, label, expiresIn })
    record('token.issue', `${issued.principal} #${issued.id}`)
    return await reply.code(201).header('Cache-Control', 'no-store').send(issued)
  })

  fastify.post<{ Params: { id: number } }>('/tokens/:id/revoke', { schema: { params: idParam } }, async (request) => {
    const token = await revokeApiToken(db, request.params.id)
    record('token.revoke', `${token.principal} #${token.id}`)
    return token
  })

  fastify.get('/clients', async () => ({ clients: await listClients(db) }))

  fastify.post<{ Body: { name: string, redirect_uris?: string[], principal?: string, confidential?: boolean, scopes?: string } }>('/clients', {
    schema: { body: schemas.clientBody }
  }, async (request, reply) => {
    const { name, redirect_uris: redirectUris = [], principal, confidential, scopes } = request.body
    const registered = await createPreregisteredClient(db, { name, redirectUris, principal, confidential, scopes })
    record('client.add', registered.client.clientId)
    return await reply.code(201).header('Cache-Control', 'no-store').send({ ...registrationResponse(registered), principal: principal ?? null })
  })

  fastify.delete<{ Params: { clientId: string } }>('/clients/:clientId', {
    schema: { params: schemas.clientIdParam }
  }, async (request) => {
    await removeClient(db, request.params.clientId)
    record('client.remove', request.params.clientId)
    return { removed: request.params.clientId }
  })

  fastify.get<{ Querystring: { principal?: string, client?: string } }>('/grants', {
    schema: { querystring: schemas.grantsQuery }
  }, async (request) => ({ grants: await listGrants(db, { principal: request.query.principal, clientId: request.query.client }) }))

  fastify.post<{ Params: { id: number } }>('/grants/:id/revoke', { schema: { params: idParam } }, async (request) => {
    await revokeGrantByAdmin(db, request.params.id)
    record('grant.revoke', `#${request.params.id}`)
    return { revoked: request.params.id }
  })

  // External identities: which principal a subject at an IDP_FILE provider acts as.
  const knownProviders = config.identityProviders.map((p) => p.id)

  fastify.get<{ Querystring: { provider?: string } }>('/identities', {
    schema: { querystring: schemas.identitiesQuery }
  }, async (request) => {
    const { provider } = request.query
    const identities = await listIdentities(db, provider)
    // Links of a provider since removed from IDP_FILE are still listed (so they can be unlinked);
    // an unknown provider with none is a typo, not an empty list.
    if (provider !== undefined && identities.length === 0) checkKnownProvider(provider, knownProviders)
    return { identities }
  })

  fastify.post<{ Body: { provider: string, subject: string, principal: string } }>('/identities', {
    schema: { body: schemas.identityBody }
  }, async (request, reply) => {
    const linked = await linkIdentity(db, request.body, knownProviders)
    record('identity.link', `${linked.provider} #${linked.id} -> ${linked.principal}`)
    return await reply.code(201).send(linked)
  })

  fastify.delete<{ Params: { id: number } }>('/identities/:id', { schema: { params: idParam } }, async (request) => {
    const unlinked = await unlinkIdentity(db, request.params.id)
    record('identity.unlink', `${unlinked.provider} #${unlinked.id} -> ${unlinked.principal}`)
    return unlinked
  })

  fastify.post<{ Body: { principal: string } }>('/login-codes', {
    schema: { body: schemas.loginCodeBody }
  }, async (request, reply) => {
    const issued = await createLoginCode(db, request.body.principal)
    record('login-code.issue', issued.principal)
    return await reply.code(201).header('Cache-Control', 'no-store').send(issued)
  })

  fastify.get<{ Querystring: { limit?: number } }>('/audit', {
    schema: { querystring: schemas.auditQuery }
  }, async (request) => {
    await audit.flush()
    const rows = await db.select().from(auditLog).orderBy(desc(auditLog.id)).limit(request.query.limit ?? 50)
    return {
      entries: rows.reverse().map((r) => ({
        id: r.id,
        at: r.at.toISOString(),
        kind: r.kind,
        action: r.action,
        outcome: r.outcome,
        principal_id: r.principalId,
        principal: r.principalName,
        auth_kind: r.authKind,
        client_id: r.clientId,
        duration_ms: r.durationMs,
        detail: r.detail
      }))
    }
  })

  fastify.setErrorHandler(async (error: FastifyError | InputError, request, reply) => {
    if (error instanceof InputError) return await reply.code(error.statusCode).send({ error: 'invalid_request', message: error.message })
    const failure = classifyAndLog(request.log, error, 'admin request failed')
    if (failure.retryAfter !== undefined) reply.header('Retry-After', failure.retryAfter)
    const code = failure.kind === 'unavailable' ? 'service_unavailable' : failure.kind === 'internal' ? 'internal_error' : 'invalid_request'
    return await reply.code(failure.status).send({ error: code, message: failure.message })
  })
  fastify.setNotFoundHandler(async (request, reply) => await reply.code(404).send({ error: 'not_found', message: `${request.method} ${request.url.split('?')[0] ?? ''} is not an admin route` }))
}

export async function buildAdminApp (runtime: Runtime): Promise<FastifyInstance> {
  const fastify = Fastify({
    loggerInstance: runtime.log.child({ listener: 'admin' }),
    bodyLimit: 64 * 1024,
    schemaController: { compilersFactory: { buildValidator: sharedValidators } }
  })
  await fastify.register(adminRoutes, { runtime })
  return fastify
}

/** Whether a parsed value (string, or array/object of them, as deep as JSON goes) holds a NUL character. */
function holdsNul (value: unknown): boolean {
  const pending: unknown[] = [value]
  while (pending.length > 0) {
    const next = pending.pop()
    if (typeof next === 'string') {
      if (next.includes('\u0000')) return true
    } else if (typeof next === 'object' && next !== null) {
      for (const [key, item] of Object.entries(next)) {
        if (key.includes('\u0000')) return true
        pending.push(item)
      }
    }
  }
  return false
}
