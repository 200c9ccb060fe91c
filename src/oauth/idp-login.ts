import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { decodeProtectedHeader } from 'jose'
import * as oidc from 'openid-client'
import type { Config } from '../config.ts'
import type { Executor } from '../db/client.ts'
import { principalForIdentity, provisionIdentity, touchIdentities, type IdentityPrincipal } from '../idp/identities.ts'
import type { IdpProvider, LoginSettings } from '../idp/types.ts'
import { InputError } from '../lib/input-error.ts'
import { randomToken } from '../lib/secrets.ts'
import type { OAuthRuntime } from '../runtime.ts'
import { AuthorizePageError, type SignInLink } from './consent-page.ts'
import { findPendingAuthorizationById, type PendingAuthorization } from './consent-store.ts'
import { singleParams } from './errors.ts'
import { rateLimit } from './http.ts'
import {
  allowsInsecureRequests, clientErrorFor, IDP_COOKIE_PATH, idpBrowserCookieName, idpCallbackUrl, idpLoginExpiry, idpStartPath,
  linkCommand, nameFromClaims, subjectFromClaims, tokenEndpointAuthMethod, unmetRequiredClaim
} from './idp-flow.ts'
import { consumeIdpLogin, createIdpLogin, type IdpLoginRow } from './idp-store.ts'

/** A provider with `login` in IDP_FILE. */
export type LoginProvider = IdpProvider & { login: LoginSettings }

/** What the sign-in needs from the consent flow (authorize.ts), which owns pending authorizations and the page. */
export interface ConsentFlow {
  /**
   * The pending authorization a "Sign in with …" link names, after the checks the consent form
   * gets (live, not cross-site, the transaction's CSRF cookie); throws the same page errors.
   */
  checkTransaction: (request: FastifyRequest, transaction: string | undefined) => Promise<PendingAuthorization>
  /**
   * The consent page again for this request, under a new transaction: signed in as a principal
   * (approve or deny only), or with an error and every way to prove a principal.
   */
  showConsent: (reply: FastifyReply, pending: PendingAuthorization, outcome: ConsentOutcome) => Promise<FastifyReply>
  /** Spends the request and sends the error to the client (RFC 6749 §4.1.2.1, with state and iss). */
  refuse: (reply: FastifyReply, pending: PendingAuthorization, error: string, description: string, detail: string) => Promise<FastifyReply>
}

export type ConsentOutcome =
  | { signedIn: { principalId: number, principalName: string, provider: LoginProvider } }
  | { error: string, command?: string, status: number }

/** The provider could not be reached (discovery failed): the page says so with 503. */
export class IdpUnreachable extends AuthorizePageError {
  constructor (provider: LoginProvider) {
    super(`Cannot reach ${provider.login.label}`, `This server cannot reach ${provider.login.label} to sign you in right now. Try again in a moment, or use an API token or login code.`, 503)
  }
}

/** Discovery documents are fetched again after this long (new endpoints, new signing algorithms). */
const DISCOVERY_TTL_MS = 60 * 60_000
/** Seconds openid-client waits for the provider (discovery, token endpoint, keys). */
const PROVIDER_TIMEOUT_SECONDS = 10

/**
 * The relying-party side of "Sign in with LABEL" (OpenID Connect code flow with PKCE, state and
 * nonce, through openid-client): one instance per app, holding each provider's discovered
 * configuration. The routes are below; authorize.ts uses `begin` for `login.default`.
 */
export class IdpLogins {
  readonly providers: LoginProvider[]
  private readonly db: Executor
  private readonly publicUrl: string
  private readonly secureCookies: boolean
  private readonly discovered = new Map<string, { at: number, configuration: Promise<oidc.Configuration> }>()

  constructor (config: Pick<Config, 'publicUrl' | 'identityProviders'>, db: Executor) {
    this.providers = config.identityProviders.filter((p): p is LoginProvider => p.login !== undefined)
    this.db = db
    this.publicUrl = config.publicUrl
    this.secureCookies = config.publicUrl.startsWith('https:')
  }

  find (id: string): LoginProvider | undefined {
    return this.providers.find((p) => p.id === id)
  }

  /** The provider an authorization request goes to at once (`login.default`), if any. */
  get defaultProvider (): LoginProvider | undefined {
    return this.providers.find((p) => p.login.default)
  }

  signInLinks (transaction: string): SignInLink[] {
    return this.providers.map((p) => ({ label: p.login.label, href: idpStartPath(p.id, transaction) }))
  }

  /**
   * Starts a sign-in for a pending authorization whose browser was checked (or which was created
   * in this very response): stores state, nonce and PKCE verifier, binds them to the browser with
   * a cookie, and returns the provider's authorization URL. Throws IdpUnreachable.
   */
  async begin (reply: FastifyReply, pending: Pick<PendingAuthorization, 'id' | 'expiresAt'>, provider: LoginProvider, log: FastifyBaseLogger): Promise<string> {
    const configuration = await this.configuration(provider, log)
    const state = oidc.randomState()
    const nonce = oidc.randomNonce()
    const codeVerifier = oidc.randomPKCECodeVerifier()
    const browserSecret = randomToken()
    const expiresAt = idpLoginExpiry(Date.now(), pending.expiresAt)
    await createIdpLogin(this.db, { state, browserSecret, pendingAuthorizationId: pending.id, provider: provider.id, nonce, codeVerifier, expiresAt })
    // Lax, not Strict: the callback arrives as a navigation from the provider's site.
    reply.setCookie(idpBrowserCookieName(state), browserSecret, {
      path: IDP_COOKIE_PATH, maxAge: Math.max(1, Math.floor((expiresAt.getTime() - Date.now()) / 1000)), httpOnly: true, sameSite: 'lax', secure: this.secureCookies
    })
    return oidc.buildAuthorizationUrl(configuration, {
      redirect_uri: idpCallbackUrl(this.publicUrl, provider.id),
      response_type: 'code',
      scope: provider.login.scopes.join(' '),
      state,
      nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256'
    }).href
  }

  /**
   * Redeems the provider's code (PKCE verifier, client secret) and returns the verified ID token's
   * claims: openid-client checks the callback's state and `iss`, and the ID token's signature
   * (keys from the discovery document), issuer, audience, expiry and nonce; we add the provider's
   * algorithm list. Throws an AuthorizePageError saying what went wrong, never a secret.
   */
  async exchange (provider: LoginProvider, login: IdpLoginRow, state: string, rawQuery: string, log: FastifyBaseLogger): Promise<Record<string, unknown>> {
    const configuration = await this.configuration(provider, log)
    const label = provider.login.label
    const currentUrl = new URL(idpCallbackUrl(this.publicUrl, provider.id))
    currentUrl.search = rawQuery
    try {
      const tokens = await oidc.authorizationCodeGrant(configuration, currentUrl, {
        pkceCodeVerifier: login.codeVerifier, expectedState: state, expectedNonce: login.nonce, idTokenExpected: true
      })
      const alg = decodeProtectedHeader(tokens.id_token ?? '').alg
      if (alg === undefined || !provider.algorithms.includes(alg)) {
        log.warn({ provider: provider.id, alg }, 'identity provider sign-in refused: the ID token algorithm is not in the provider\'s algorithms')
        throw new AuthorizePageError('Sign-in failed', `${label} signed the sign-in with an algorithm this server does not accept (${alg ?? 'none'}), so it was refused.`, 502)
      }
      const claims = tokens.claims()
      if (claims === undefined) throw new AuthorizePageError('Sign-in failed', `${label} sent no ID token.`, 502)
      return claims as Record<string, unknown>
    } catch (err) {
      if (err instanceof AuthorizePageError) throw err
      if (err instanceof oidc.ResponseBodyError) {
        log.warn({ provider: provider.id, error: err.error, status: err.status }, 'identity provider refused the code exchange')
        throw new AuthorizePageError('Sign-in failed', `${label} refused to complete the sign-in (${err.error}). Start again; if this keeps happening, the server's operator should check the login settings of provider "${provider.id}".`, 502)
      }
      if (isNetworkError(err)) {
        log.warn({ provider: provider.id, reason: (err as Error).message }, 'identity provider unreachable at the token endpoint')
        throw new AuthorizePageError(`Cannot reach ${label}`, `This server could not reach ${label} to finish the sign-in. Try again in a moment.`, 503)
      }
      if (err instanceof oidc.ClientError || err instanceof oidc.AuthorizationResponseError) {
        // The messages say which check failed (signature, nonce, issuer…); never a token. (Not
        // `code`: the logger redacts that field.)
        const detail = err.cause instanceof Error ? err.cause.message : undefined
        log.warn({ provider: provider.id, check: err.code, reason: err.message, detail }, 'identity provider sign-in refused: the answer failed verification')
        throw new AuthorizePageError('Sign-in failed', `The answer from ${label} could not be verified, so the sign-in was refused. Start again from your application.`, 502)
      }
      throw err
    }
  }

  /** The provider's configuration from its discovery document, cached; a failure is not cached. */
  private async configuration (provider: LoginProvider, log: FastifyBaseLogger): Promise<oidc.Configuration> {
    const cached = this.discovered.get(provider.id)
    if (cached !== undefined && Date.now() - cached.at < DISCOVERY_TTL_MS) {
      try {
        return await cached.configuration
      } catch {
        throw new IdpUnreachable(provider)
      }
    }
    const entry = { at: Date.now(), configuration: this.discover(provider) }
    this.discovered.set(provider.id, entry)
    try {
      return await entry.configuration
    } catch (err) {
      if (this.discovered.get(provider.id) === entry) this.discovered.delete(provider.id)
      log.warn({ provider: provider.id, issuer: provider.issuer, reason: (err as Error).message }, 'identity provider discovery failed')
      throw new IdpUnreachable(provider)
    }
  }

  private async discover (provider: LoginProvider): Promise<oidc.Configuration> {
    const insecure = allowsInsecureRequests(provider.issuer)
    const found = await oidc.discovery(new URL(provider.issuer), provider.login.clientId, undefined, oidc.None(), {
      timeout: PROVIDER_TIMEOUT_SECONDS, ...(insecure ? { execute: [oidc.allowInsecureRequests] } : {})
    })
    const server = found.serverMetadata()
    const secret = provider.login.clientSecret
    const auth = tokenEndpointAuthMethod(server.token_endpoint_auth_methods_supported) === 'client_secret_post'
      ? oidc.ClientSecretPost(secret)
      : oidc.ClientSecretBasic(secret)
    const configuration = new oidc.Configuration(server, provider.login.clientId, { [oidc.clockTolerance]: provider.clockToleranceSeconds }, auth)
    if (insecure) oidc.allowInsecureRequests(configuration)
    // openid-client trusts the TLS channel for an ID token from the token endpoint (OpenID Connect
    // Core 3.1.3.7 allows it) and skips its signature; check it against the provider's keys
    // anyway, so nothing between us and the token endpoint can hand us an identity.
    oidc.enableNonRepudiationChecks(configuration)
    configuration.timeout = PROVIDER_TIMEOUT_SECONDS
    return configuration
  }
}

/** fetch's own failures (refused, reset, DNS) and timeouts, as opposed to an answer that failed a check. */
function isNetworkError (err: unknown): boolean {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return true
  return err instanceof TypeError && err.cause !== undefined
}

/** What the page says when a callback's state names no live sign-in of this browser. */
const STATE_PAGES: Record<'unknown' | 'used' | 'expired' | 'other_browser', (label: string) => [string, string, number]> = {
  unknown: (label) => ['This sign-in is not valid', `This server did not start this sign-in at ${label}. Start the connection again from your application.`, 400],
  used: () => ['This sign-in was already used', 'This sign-in has already come back once (a reload, or a replayed link). Start the connection again from your application.', 400],
  expired: () => ['This sign-in has expired', 'The sign-in took too long. Start the connection again from your application.', 400],
  other_browser: () => ['Sign-in refused', 'This sign-in was started in another browser (its security cookie is missing here). Finish it in the browser where you started, or start again.', 403]
}

/**
 * `GET /oauth/idp/ID/start?transaction=T` (the consent page's link) and `GET /oauth/idp/ID/callback`
 * (the provider's redirect). Registered inside the authorize plugin: its error handler renders
 * AuthorizePageError, and its cookie parser is shared.
 */
export default async function idpLoginRoutes (fastify: FastifyInstance, { runtime, logins, consent }: { runtime: OAuthRuntime, logins: IdpLogins, consent: ConsentFlow }): Promise<void> {
  const { config, database, audit } = runtime
  const db = database.db
  const routeOptions = { exposeHeadRoute: false, config: { rateLimit: rateLimit(config, 'authorize') } }

  function providerOf (request: FastifyRequest): LoginProvider {
    const id = (request.params as { provider: string }).provider
    const provider = logins.find(id)
    if (provider === undefined) throw new AuthorizePageError('Unknown identity provider', 'This server offers no sign-in with that provider.', 404)
    return provider
  }

  function params (query: unknown, names: readonly string[]): Record<string, string | undefined> {
    try {
      return singleParams(query, names)
    } catch (err) {
      throw new AuthorizePageError('Invalid sign-in request', (err as Error).message)
    }
  }

  fastify.get('/oauth/idp/:provider/start', routeOptions, async (request, reply) => {
    const provider = providerOf(request)
    const pending = await consent.checkTransaction(request, params(request.query, ['transaction']).transaction)
    const location = await logins.begin(reply, pending, provider, request.log)
    return await reply.code(302).header('Location', location).header('Cache-Control', 'no-store').header('Referrer-Policy', 'no-referrer').send()
  })

  fastify.get('/oauth/idp/:provider/callback', routeOptions, async (request, reply) => {
    const provider = providerOf(request)
    const label = provider.login.label
    const detail = `idp:${provider.id}`
    const query = params(request.query, ['state', 'code', 'error', 'error_description', 'iss'])
    if (query.state === undefined) throw new AuthorizePageError('This sign-in is not valid', `The answer from ${label} names no sign-in (no state). Start the connection again from your application.`)
    const cookieName = idpBrowserCookieName(query.state)
    const consumed = await consumeIdpLogin(db, provider.id, query.state, request.cookies[cookieName])
    if (request.cookies[cookieName] !== undefined) reply.clearCookie(cookieName, { path: IDP_COOKIE_PATH })
    if (!consumed.ok) {
      audit.record({ kind: 'oauth', action: 'sign_in', outcome: 'denied', detail: `${detail} ${consumed.reason}` })
      const [title, message, status] = STATE_PAGES[consumed.reason](label)
      throw new AuthorizePageError(title, message, status)
    }
    const pending = await findPendingAuthorizationById(db, consumed.login.pendingAuthorizationId)
    if (pending === undefined || pending.consumedAt !== null || pending.expiresAt.getTime() <= Date.now()) {
      throw new AuthorizePageError('This request is no longer valid', 'This authorization request was already used or has expired. Start the connection again from your application.')
    }

    if (query.error !== undefined) {
      const error = clientErrorFor(query.error)
      if (error !== 'access_denied') request.log.warn({ provider: provider.id, error: query.error.slice(0, 100) }, 'identity provider answered the sign-in with an error')
      const description = error === 'access_denied' ? `The sign-in at ${label} was cancelled or refused` : `${label} could not sign you in`
      return await consent.refuse(reply, pending, error, description, `${detail} ${query.error.slice(0, 40)}`)
    }

    const q = request.url.indexOf('?')
    const claims = await logins.exchange(provider, consumed.login, query.state, q === -1 ? '' : request.url.slice(q), request.log)
    const subject = subjectFromClaims(claims, provider)
    if (!subject.ok) {
      request.log.warn({ provider: provider.id, reason: subject.problem }, 'identity provider sign-in refused')
      audit.record({ kind: 'oauth', action: 'sign_in', outcome: 'denied', detail: `${detail} no subject` })
      throw new AuthorizePageError('Sign-in failed', `${label} signed you in, but ${subject.problem}.`, 502)
    }
    const unmet = unmetRequiredClaim(claims, provider)
    if (unmet !== undefined) {
      audit.record({ kind: 'oauth', action: 'sign_in', outcome: 'denied', detail: `${detail} required claim ${unmet}`.slice(0, 120) })
      return await consent.showConsent(reply, pending, {
        status: 403,
        error: `You signed in at ${label} as "${subject.subject}", but this server accepts only accounts whose "${unmet}" claim has the value it requires.`
      })
    }
    let identity: IdentityPrincipal | undefined
    try {
      identity = provider.principals === 'auto'
        ? await provisionIdentity(db, { provider: provider.id, subject: subject.subject, name: nameFromClaims(claims, provider), scopes: provider.autoScopes })
        : await principalForIdentity(db, provider.id, subject.subject)
    } catch (err) {
      if (err instanceof InputError) throw new AuthorizePageError('Sign-in failed', err.message, 409)
      throw err
    }
    if (identity === undefined) {
      audit.record({ kind: 'oauth', action: 'sign_in', outcome: 'denied', detail: `${detail} unlinked` })
      return await consent.showConsent(reply, pending, {
        status: 403,
        error: `You signed in at ${label} as "${subject.subject}", but that account is not linked to a principal on this server. ` +
          'Ask the server\'s operator to link it (the command is below, with the principal\'s name for NAME), then sign in again; or use an API token or login code.',
        command: linkCommand(provider.id, subject.subject)
      })
    }
    if (identity.disabled) {
      audit.record({ kind: 'oauth', action: 'sign_in', outcome: 'denied', principalId: identity.principalId, principalName: identity.principalName, detail: `${detail} principal disabled` })
      return await consent.showConsent(reply, pending, { status: 403, error: `You signed in at ${label} as principal ${identity.principalName}, which is disabled on this server.` })
    }
    await touchIdentities(db, [identity.identityId])
    audit.record({ kind: 'oauth', action: 'sign_in', outcome: 'ok', principalId: identity.principalId, principalName: identity.principalName, detail })
    return await consent.showConsent(reply, pending, { signedIn: { principalId: identity.principalId, principalName: identity.principalName, provider } })
  })
}
