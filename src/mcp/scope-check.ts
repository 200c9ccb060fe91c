import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify'
import type { AuditLog } from '../audit/audit-log.ts'
import { bearerChallenge } from '../auth/challenge.ts'
import { sortScopes, type Scope } from '../auth/scopes.ts'
import { authLabel } from '../auth/types.ts'
import { sendRpcError } from './protocol.ts'
import { TOOLS_BY_NAME } from './tools.ts'

/**
 * Step-up (MCP authorization, RFC 6750 §3.1): a tool call the token's scopes do not cover is
 * answered 403 insufficient_scope naming every scope the request needs, so the client can ask
 * for them in one authorization. Only the scopes this request needs: since the 2026-07-28
 * revision the client, not the server, accumulates what it was granted before.
 */
export function createScopeCheck ({ audit, resourceMetadataUrl }: { audit: AuditLog, resourceMetadataUrl: string }): preHandlerAsyncHookHandler {
  return async function checkScopes (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const auth = request.auth
    if (auth === null) return
    const needed = new Set<Scope>()
    const refused = new Set<string>()
    for (const message of Array.isArray(request.body) ? request.body : [request.body]) {
      const name = toolNameOf(message)
      const scope = name === undefined ? undefined : TOOLS_BY_NAME.get(name)?.scope
      if (name === undefined || scope === undefined || scope === null) continue
      needed.add(scope)
      if (!auth.scopes.includes(scope)) refused.add(name)
    }
    const missing = [...needed].filter((s) => !auth.scopes.includes(s))
    if (missing.length === 0) return
    const scope = sortScopes([...needed]).join(' ')
    audit.record({
      kind: 'tool',
      action: [...refused].join(' '),
      outcome: 'denied',
      principalId: auth.principalId,
      principalName: auth.principalName,
      authKind: authLabel(auth),
      clientId: auth.clientId,
      detail: 'insufficient_scope'
    })
    reply.header('WWW-Authenticate', bearerChallenge({
      resourceMetadataUrl, error: 'insufficient_scope', scope, errorDescription: `This call needs the ${missing.join(', ')} scope`
    }))
    const id = Array.isArray(request.body) ? null : idOf(request.body)
    await sendRpcError(reply, { status: 403, code: -32000, id, message: `Insufficient scope: this call needs ${missing.join(', ')}; re-authorize with scope "${scope}"` })
  }
}

function toolNameOf (message: unknown): string | undefined {
  if (message === null || typeof message !== 'object') return undefined
  const { method, params } = message as { method?: unknown, params?: { name?: unknown } | null }
  return method === 'tools/call' && typeof params?.name === 'string' ? params.name : undefined
}

function idOf (message: unknown): string | number | null {
  const id = (message as { id?: unknown } | null)?.id
  return typeof id === 'string' || typeof id === 'number' ? id : null
}
