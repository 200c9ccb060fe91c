import cookie from '@fastify/cookie'
import formbody from '@fastify/formbody'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { SCOPES, type Scope } from '../auth/scopes.ts'
import { classifyAndLog, type ErrorKind } from '../lib/errors.ts'
import type { OAuthClient, Principal } from '../db/schema.ts'
import { constantEquals, hashSecret } from '../lib/secrets.ts'
import { principalById, principalByName } from '../principals/store.ts'
import type { OAuthRuntime } from '../runtime.ts'
import type { ClientResolver } from './client-resolver.ts'
import { findClientByRowId } from './client-store.ts'
import {
  consumePendingAuthorization, createPendingAuthorization, findPendingAuthorization, MAX_CONSENT_ATTEMPTS,
  PENDING_AUTHORIZATION_TTL_SECONDS, principalForCredential, recordFailedAttempt, renewPendingAuthorization,
  type PendingAuthorization, type PendingRequest
} from './consent-store.ts'
import { AuthorizePageError, formActionSource, renderConsentPage, renderErrorPage, setPageHeaders } from './consent-page.ts'
import idpLoginRoutes, { IdpLogins, IdpUnreachable, type ConsentFlow } from './idp-login.ts'
import { OAuthError, singleParams } from './errors.ts'
import { createGrantWithCode } from './grants.ts'
import { isValidS256Challenge } from './pkce.ts'
import { isLoopbackRedirect, redirectUriMatches } from './redirect-uri.ts'
import { readRequestedScopes } from './requested-scopes.ts'
import { namesThisResource } from './resource.ts'
import { rateLimit } from './http.ts'

/*
 * The two ways an authorization request fails (RFC 6749 §4.1.2.1), both thrown and answered by
 * this plugin's error handler: shown on a page when the client or its redirect URI could not be
 * verified (never redirected; AuthorizePageError, in consent-page.ts so the sign-in routes throw
 * it too), sent back to the verified redirect URI otherwise (AuthorizeRedirect, below).
 */

/** A verified authorization request, waiting for a principal's approval (stored as is for the consent page). */
type ValidRequest = PendingRequest

const AUTHORIZE_PARAMS = ['client_id', 'redirect_uri', 'response_type', 'state', 'scope', 'code_challenge', 'code_challenge_method', 'resource'] as const

/**
 * The authorization endpoint (GET, and POST per RFC 6749 §3.1), also at `/authorize`.
 * Phase one verifies the client and its redirect URI (errors are shown on a page); phase two
 * checks the rest (errors go back to the client with `state` and `iss`). Then it approves at
 * once (pre-registered client bound to a principal, or AUTO_APPROVE_PRINCIPAL) or shows the
 * consent page, whose form posts back here with its transaction. The page's "Sign in with …"
 * links go to the identity-provider routes (idp-login.ts, registered below), which come back to
 * this consent flow through `ConsentFlow`.
 */
export default async function authorizeRoutes (fastify: FastifyInstance, { runtime, clients }: { runtime: OAuthRuntime, clients: ClientResolver }): Promise<void> {
  const { config, database, audit } = runtime
  const db = database.db
  const issuer = config.publicUrl
  const secureCookies = config.publicUrl.startsWith('https:')
  await fastify.register(formbody, { bodyLimit: 16 * 1024 })
  await fastify.register(cookie)
  const logins = new IdpLogins(config, db)

  fastify.setErrorHandler(async (error: FastifyError | AuthorizePageError | AuthorizeRedirect, request, reply) => {
    if (error instanceof AuthorizeRedirect) return sendRedirect(reply, error.uri, 302)
    if (error instanceof AuthorizePageError) {
      return await setPageHeaders(reply).code(error.statusCode).send(renderErrorPage(error.title, error.message))
    }
    const failure = classifyAndLog(request.log, error, 'authorize failed')
    if (failure.retryAfter !== undefined) reply.header('Retry-After', failure.retryAfter)
    const [title, message] = PAGE_TEXTS[failure.kind] ?? PAGE_TEXTS.rejected
    return await setPageHeaders(reply).code(failure.status).send(renderErrorPage(title, message))
  })

  // No automatic HEAD route: a HEAD would run the GET handler and store a consent transaction.
  const routeOptions = { exposeHeadRoute: false, config: { rateLimit: rateLimit(config, 'authorize') } }
  for (const path of ['/oauth/authorize', '/authorize']) {
    fastify.get(path, routeOptions, async (request, reply) => await handleRequest(request, reply, request.query, path))
    fastify.head(path, routeOptions, async (_request, reply) => await setPageHeaders(reply).code(405).header('Allow', 'GET, POST').send())
    fastify.post(path, routeOptions, async (request, reply) => {
      const body = (request.body ?? {}) as Record<string, unknown>
      if (typeof body.transaction === 'string' || Array.isArray(body.transaction)) return await handleConsent(request, reply, body, path)
      return await handleRequest(request, reply, body, path)
    })
  }

  async function handleRequest (request: FastifyRequest, reply: FastifyReply, params: unknown, path: string): Promise<FastifyReply> {
    const valid = await validateRequest(params)
    const autoPrincipal = await automaticPrincipal(valid.client)
    if (autoPrincipal !== undefined) {
      if (autoPrincipal.disabledAt !== null) {
        // RFC 6749 §4.1.2.1: the client and its redirect URI are verified, so the refusal goes back to it.
        audit.record({ kind: 'oauth', action: 'authorize', outcome: 'denied', principalId: autoPrincipal.id, principalName: autoPrincipal.name, clientId: valid.client.clientId, detail: 'principal disabled' })
        throw new AuthorizeRedirect(authorizationResponse(valid.redirectUri, { error: 'access_denied', error_description: 'The principal this application acts as is disabled', state: valid.state }))
      }
      return sendRedirect(reply, await approve(valid, autoPrincipal, 'automatic'), 302)
    }
    const pending = await createPendingAuthorization(db, valid)
    setCsrfCookie(reply, pending.transaction, pending.csrf, PENDING_AUTHORIZATION_TTL_SECONDS)
    let error: string | undefined
    const preferred = logins.defaultProvider
    if (preferred !== undefined) {
      // login.default: straight to the provider. The browser check of the start link is not
      // needed: the pending authorization and its cookie are created in this very response.
      try {
        return sendRedirect(reply.header('Referrer-Policy', 'no-referrer'), await logins.begin(reply, pending, preferred, request.log), 302)
      } catch (err) {
        if (!(err instanceof IdpUnreachable)) throw err
        // The other ways to approve still work: show them, with the reason.
        error = err.message
        reply.code(503)
      }
    }
    return await setPageHeaders(reply, formActionSource(valid.redirectUri)).send(renderConsentPage({
      action: path,
      transaction: pending.transaction,
      clientName: valid.client.clientName,
      clientId: valid.client.clientId,
      redirectHost: redirectHostOf(valid.redirectUri),
      loopbackOnly: valid.client.redirectUris.every(isLoopbackRedirect),
      scopes: valid.scopes,
      signIn: logins.signInLinks(pending.transaction),
      error
    }))
  }

  async function validateRequest (raw: unknown): Promise<ValidRequest> {
    // Phase one: client_id and redirect_uri, each exactly once.
    let first: Record<string, string | undefined>
    try {
      first = singleParams(raw, ['client_id', 'redirect_uri'])
    } catch (err) {
      throw new AuthorizePageError('Invalid authorization request', (err as Error).message)
    }
    if (first.client_id === undefined) throw new AuthorizePageError('Invalid authorization request', 'The request has no client_id.')
    let client: OAuthClient | undefined
    try {
      client = await clients.find(first.client_id)
    } catch (err) {
      if (err instanceof OAuthError) throw new AuthorizePageError('Unknown application', err.description)
      throw err
    }
    if (client === undefined) throw new AuthorizePageError('Unknown application', 'This application is not registered with this server (its registration may have been removed). Connect it again.')
    if (!client.grantTypes.includes('authorization_code')) throw new AuthorizePageError('Invalid authorization request', 'This client is not allowed to use the authorization code flow.')
    let redirectUri = first.redirect_uri
    if (redirectUri === undefined) {
      // RFC 6749 §3.1.2.3: optional only when exactly one complete URI is registered.
      const only = client.redirectUris.length === 1 ? client.redirectUris[0] : undefined
      if (only === undefined || isLoopbackRedirect(only)) throw new AuthorizePageError('Invalid authorization request', 'The request has no redirect_uri, and the client has no single one to default to.')
      redirectUri = only
    } else if (!client.redirectUris.some((registered) => redirectUriMatches(registered, redirectUri as string))) {
      throw new AuthorizePageError('Invalid redirect URI', 'The redirect_uri is not one this application registered.')
    }

    // Phase two: errors go back to the verified redirect URI.
    const fail = (error: string, description: string, state?: string): AuthorizeRedirect =>
      new AuthorizeRedirect(authorizationResponse(redirectUri as string, { error, error_description: description, state }))
    const stateValue = (raw as Record<string, unknown> | undefined)?.state
    const state = typeof stateValue === 'string' && stateValue.length <= 4096 ? stateValue : undefined
    let p: Record<string, string | undefined>
    try {
      p = singleParams(raw, AUTHORIZE_PARAMS)
    } catch (err) {
      throw fail('invalid_request', (err as OAuthError).description, state)
    }
    if (p.response_type !== 'code') {
      throw fail(p.response_type === undefined ? 'invalid_request' : 'unsupported_response_type', 'response_type must be "code"', state)
    }
    if (p.code_challenge === undefined) throw fail('invalid_request', 'PKCE is required: send code_challenge with code_challenge_method=S256', state)
    if (p.code_challenge_method !== 'S256') throw fail('invalid_request', 'code_challenge_method must be S256 (plain is not accepted)', state)
    if (!isValidS256Challenge(p.code_challenge)) throw fail('invalid_request', 'code_challenge must be 43 base64url characters (S256)', state)
    if (p.resource !== undefined && !namesThisResource(p.resource, config.resourceUrl)) {
      throw fail('invalid_target', `resource must be ${config.resourceUrl}`, state)
    }
    const allowed = client.scopes === null ? [...SCOPES] : client.scopes as Scope[]
    let scopes: Scope[] = allowed
    if (p.scope !== undefined) {
      const requested = readRequestedScopes(p.scope)
      if (!requested.ok) throw fail('invalid_scope', requested.description, state)
      // No scope (or only offline_access) means the default; others are narrowed to what the client may hold.
      if (requested.scopes !== undefined) scopes = requested.scopes.filter((s) => allowed.includes(s))
    }
    if (scopes.length === 0) throw fail('invalid_scope', 'None of the requested scopes is available to this client', state)
    return { client, redirectUri, state, codeChallenge: p.code_challenge, scopes, resource: config.resourceUrl }
  }

  async function automaticPrincipal (client: OAuthClient): Promise<Principal | undefined> {
    let principal: Principal | undefined
    if (client.kind === 'preregistered') {
      if (client.principalId === null) return undefined
      principal = await principalById(db, client.principalId)
    } else if (config.autoApprovePrincipal !== undefined) {
      principal = await principalByName(db, config.autoApprovePrincipal)
      if (principal === undefined) throw new AuthorizePageError('Server misconfigured', `AUTO_APPROVE_PRINCIPAL names "${config.autoApprovePrincipal}", which does not exist. Create it with: npx bus-mcp principal add ${config.autoApprovePrincipal}`, 500)
    } else {
      return undefined
    }
    if (principal === undefined) throw new AuthorizePageError('Access denied', 'The principal this application acts as does not exist.', 403)
    return principal
  }

  /** Issues the code for `principal`, narrowing the scopes to what it holds; returns the redirect. */
  async function approve (request: ValidRequest, principal: Principal, how: string): Promise<string> {
    const scopes = request.scopes.filter((s) => principal.scopes.includes(s))
    if (scopes.length === 0) {
      audit.record({ kind: 'oauth', action: 'authorize', outcome: 'denied', principalId: principal.id, principalName: principal.name, clientId: request.client.clientId, detail: 'no scopes' })
      return authorizationResponse(request.redirectUri, { error: 'access_denied', error_description: `${principal.name} holds none of the requested scopes`, state: request.state })
    }
    const code = await createGrantWithCode(db, {
      client: request.client, principalId: principal.id, scopes, resource: request.resource, redirectUri: request.redirectUri, codeChallenge: request.codeChallenge
    }, config)
    audit.record({ kind: 'oauth', action: 'authorize', outcome: 'ok', principalId: principal.id, principalName: principal.name, authKind: 'oauth', clientId: request.client.clientId, detail: how })
    return authorizationResponse(request.redirectUri, { code, state: request.state })
  }

  async function handleConsent (request: FastifyRequest, reply: FastifyReply, body: Record<string, unknown>, path: string): Promise<FastifyReply> {
    let form: Record<string, string | undefined>
    try {
      form = singleParams(body, ['transaction', 'action', 'credential'])
    } catch (err) {
      throw new AuthorizePageError('Invalid form', (err as Error).message)
    }
    const { pending, csrf } = await checkedPending(request, form.transaction, 'form')
    const client = await findClientByRowId(db, pending.clientId)
    if (client === undefined) throw new AuthorizePageError('Unknown application', 'This application was removed.')
    const valid: ValidRequest = {
      client, redirectUri: pending.redirectUri, state: pending.state ?? undefined, codeChallenge: pending.codeChallenge, scopes: pending.scopes as Scope[], resource: pending.resource
    }
    setCsrfCookie(reply, form.transaction as string, '', 0)

    if (form.action === 'deny') {
      if (!await consumePendingAuthorization(db, pending.id)) throw spentError()
      audit.record({ kind: 'oauth', action: 'authorize', outcome: 'denied', clientId: client.clientId, detail: 'denied on consent page' })
      return sendRedirect(reply, authorizationResponse(valid.redirectUri, { error: 'access_denied', error_description: 'The request was denied', state: valid.state }), 303)
    }
    if (form.action !== 'approve') throw new AuthorizePageError('Invalid form', 'Choose Approve or Deny.')
    if (pending.signedInPrincipalId !== null) {
      // Signed in at an identity provider (idp-login.ts): that sign-in is the proof, no credential.
      const signedIn = await principalById(db, pending.signedInPrincipalId)
      if (!await consumePendingAuthorization(db, pending.id)) throw spentError()
      const how = `idp:${pending.signedInProvider ?? '?'}`
      if (signedIn === undefined || signedIn.disabledAt !== null) {
        audit.record({ kind: 'oauth', action: 'authorize', outcome: 'denied', principalId: signedIn?.id, principalName: signedIn?.name, clientId: client.clientId, detail: `${how} principal disabled` })
        return sendRedirect(reply, authorizationResponse(valid.redirectUri, { error: 'access_denied', error_description: 'The principal you signed in as is disabled', state: valid.state }), 303)
      }
      return sendRedirect(reply, await approve(valid, signedIn, how), 303)
    }
    const principal = form.credential === undefined ? null : await principalForCredential(db, form.credential)
    if (principal === null) {
      const attempts = await recordFailedAttempt(db, pending.id)
      audit.record({ kind: 'oauth', action: 'consent', outcome: 'denied', clientId: client.clientId, detail: 'wrong credential' })
      if (attempts >= MAX_CONSENT_ATTEMPTS) {
        await consumePendingAuthorization(db, pending.id)
        return sendRedirect(reply, authorizationResponse(valid.redirectUri, { error: 'access_denied', error_description: 'Too many wrong credentials', state: valid.state }), 303)
      }
      setCsrfCookie(reply, form.transaction as string, csrf, Math.max(1, Math.floor((pending.expiresAt.getTime() - Date.now()) / 1000)))
      return await setPageHeaders(reply, formActionSource(valid.redirectUri)).code(401).send(renderConsentPage({
        action: path,
        transaction: form.transaction as string,
        clientName: client.clientName,
        clientId: client.clientId,
        redirectHost: redirectHostOf(valid.redirectUri),
        loopbackOnly: client.redirectUris.every(isLoopbackRedirect),
        scopes: valid.scopes,
        signIn: logins.signInLinks(form.transaction as string),
        error: `That is not a valid API token or login code (attempt ${attempts} of ${MAX_CONSENT_ATTEMPTS}).`
      }))
    }
    if (!await consumePendingAuthorization(db, pending.id)) throw spentError()
    return sendRedirect(reply, await approve(valid, principal, 'consent'), 303)
  }

  /**
   * The pending authorization a consent form (or a "Sign in with …" link) names, if it is live and
   * came from this browser: the cookie set with its page must come back with it (CSRF: a form
   * posted, or a link opened, from another site or another browser does not carry it).
   */
  async function checkedPending (request: FastifyRequest, transaction: string | undefined, what: 'form' | 'link'): Promise<{ pending: PendingAuthorization, csrf: string }> {
    const pending = transaction === undefined ? undefined : await findPendingAuthorization(db, transaction)
    if (pending === undefined || pending.consumedAt !== null || pending.expiresAt.getTime() <= Date.now()) {
      throw new AuthorizePageError('This request is no longer valid', 'This authorization page was already used or has expired. Start the connection again from your application.')
    }
    // Defence in depth next to the SameSite cookie: browsers mark requests from other sites.
    if (request.headers['sec-fetch-site'] === 'cross-site') {
      throw new AuthorizePageError('Request refused', `This ${what} was ${what === 'form' ? 'submitted' : 'opened'} from another site. Start the connection again from your application.`, 403)
    }
    const csrf = request.cookies[csrfCookieName(transaction as string)]
    if (csrf === undefined || !constantEquals(hashSecret(csrf).toString('base64'), pending.csrfHash.toString('base64'))) {
      throw new AuthorizePageError('Request refused', `This ${what} did not come from the page this server showed you (missing or wrong security cookie). Start the connection again.`, 403)
    }
    return { pending, csrf }
  }

  const consent: ConsentFlow = {
    checkTransaction: async (request, transaction) => (await checkedPending(request, transaction, 'link')).pending,

    async showConsent (reply, pending, outcome) {
      const client = await findClientByRowId(db, pending.clientId)
      if (client === undefined) throw new AuthorizePageError('Unknown application', 'This application was removed.')
      const signedIn = 'signedIn' in outcome ? outcome.signedIn : undefined
      const renewed = await renewPendingAuthorization(db, pending.id, signedIn === undefined ? null : { principalId: signedIn.principalId, provider: signedIn.provider.id })
      if (renewed === undefined) throw spentError()
      // The page before the sign-in is dead (its transaction is replaced): drop its cookie.
      reply.clearCookie(csrfCookieNameOfHash(renewed.previousTransactionHash), { path: '/' })
      setCsrfCookie(reply, renewed.transaction, renewed.csrf, Math.max(1, Math.floor((pending.expiresAt.getTime() - Date.now()) / 1000)))
      return await setPageHeaders(reply, formActionSource(pending.redirectUri)).code('status' in outcome ? outcome.status : 200).send(renderConsentPage({
        action: '/oauth/authorize',
        transaction: renewed.transaction,
        clientName: client.clientName,
        clientId: client.clientId,
        redirectHost: redirectHostOf(pending.redirectUri),
        loopbackOnly: client.redirectUris.every(isLoopbackRedirect),
        scopes: pending.scopes as Scope[],
        signIn: logins.signInLinks(renewed.transaction),
        signedIn: signedIn === undefined ? undefined : { principal: signedIn.principalName, provider: signedIn.provider.login.label },
        error: 'error' in outcome ? outcome.error : undefined,
        command: 'command' in outcome ? outcome.command : undefined
      }))
    },

    async refuse (reply, pending, error, description, detail) {
      if (!await consumePendingAuthorization(db, pending.id)) throw spentError()
      const client = await findClientByRowId(db, pending.clientId)
      audit.record({ kind: 'oauth', action: 'authorize', outcome: 'denied', clientId: client?.clientId, detail })
      reply.clearCookie(csrfCookieNameOfHash(pending.transactionHash), { path: '/' })
      return sendRedirect(reply, authorizationResponse(pending.redirectUri, { error, error_description: description, state: pending.state ?? undefined }), 302)
    }
  }
  await fastify.register(idpLoginRoutes, { runtime, logins, consent })

  function authorizationResponse (redirectUri: string, params: Record<string, string | undefined>): string {
    const url = new URL(redirectUri)
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined) url.searchParams.set(name, value)
    }
    // RFC 9207: every authorization response names its issuer (mix-up defence).
    url.searchParams.set('iss', issuer)
    return url.toString()
  }

  function setCsrfCookie (reply: FastifyReply, transaction: string, value: string, maxAge: number): void {
    reply.setCookie(csrfCookieName(transaction), value, { path: '/', maxAge, httpOnly: true, sameSite: 'strict', secure: secureCookies })
  }
}

/** An error response for the client, at its verified redirect URI (with state and iss). */
class AuthorizeRedirect extends Error {
  readonly uri: string

  constructor (uri: string) {
    super('authorization error response')
    this.uri = uri
  }
}

/** What the page says for each kind of unexpected failure (lib/errors.ts). */
const PAGE_TEXTS: Partial<Record<ErrorKind, [string, string]>> & { rejected: [string, string] } = {
  unavailable: ['Temporarily unavailable', 'The server cannot reach its database. Try again in a moment.'],
  internal: ['Authorization failed', 'Something went wrong on the server.'],
  rate_limited: ['Too many requests', 'Too many authorization attempts from your address. Wait a few minutes and try again.'],
  rejected: ['Authorization failed', 'The request could not be read.']
}

function spentError (): AuthorizePageError {
  return new AuthorizePageError('This request is no longer valid', 'This authorization page was already used. Start the connection again from your application.')
}

function sendRedirect (reply: FastifyReply, location: string, status: 302 | 303): FastifyReply {
  return reply.code(status).header('Location', location).header('Cache-Control', 'no-store').send()
}

/** One cookie per consent page, so two tabs authorizing at once do not overwrite each other. */
function csrfCookieName (transaction: string): string {
  return csrfCookieNameOfHash(hashSecret(transaction))
}

/** The same name from the stored hash of the transaction (the sign-in callback knows only that). */
function csrfCookieNameOfHash (transactionHash: Buffer): string {
  return `bus_consent_${transactionHash.toString('hex').slice(0, 16)}`
}

function redirectHostOf (uri: string): string {
  const url = new URL(uri)
  return url.host !== '' ? url.host : url.protocol
}
