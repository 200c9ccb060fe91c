import {
  checkAsMetadata, checkAuthorizationEndpoint, checkChallenge, checkEndpoints, checkExposeHeaders,
  checkFallbackAuthorize, checkIssParameter, checkIssuer, checkOidcAlias, checkPkce, checkPreflight,
  checkProtectedResourceMetadata, checkPublicClients, checkRegistration, checkRegistrationEndpoint,
  checkPostgresDriver, checkResponseTypes, checkTokenEndpoint, checkUnauthenticatedInitialize, checkUrl, CLAUDE_ORIGIN,
  INSPECTOR_ORIGIN, wellKnownUrl, type CheckResult, type ProtectedResourceMetadata
} from './checks.ts'
import { DEFAULT_TIMEOUT_MS, type FetchLike, type ProbeOptions } from './probe.ts'
import type { IdpProvider } from '../idp/types.ts'

export type { CheckResult, CheckStatus } from './checks.ts'

export interface DoctorOptions {
  /** Also register a throwaway client with claude.ai's exact request (creates a real client). */
  register?: boolean
  /** Per request; default 10 s. */
  timeoutMs?: number
  /** For tests; default the global fetch (which honours NODE_EXTRA_CA_CERTS). */
  fetch?: FetchLike
  /** The providers of IDP_FILE (when set where doctor runs): their discovery, keys and introspection. */
  identityProviders?: readonly IdpProvider[]
}

export interface DoctorReport {
  /** The MCP endpoint checked (after assuming /mcp for a bare origin), or null if the input was not a URL. */
  mcpUrl: string | null
  /** True when no check failed (warnings and info do not count). */
  ok: boolean
  results: CheckResult[]
}

/**
 * `bus-mcp doctor URL`: walks a deployment the way claude.ai's connector backend does and
 * reports every check. Later checks use what earlier ones found (the PRM names the issuer, the
 * AS metadata names the endpoints); a check whose input is missing is skipped, and the failure
 * that caused it says so.
 */
export async function runDoctor (input: string, options: DoctorOptions = {}): Promise<DoctorReport> {
  const probeOptions: ProbeOptions = {
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    fetch: options.fetch ?? (async (url, init) => await fetch(url, init))
  }
  const results: CheckResult[] = []
  const report = (): DoctorReport => ({ mcpUrl: url.mcpUrl?.href ?? null, ok: results.every((r) => r.ok), results })

  // 1. The URL.
  const url = checkUrl(input)
  results.push(url.result)
  const mcpUrl = url.mcpUrl
  if (mcpUrl === undefined) return report()

  // 2. Unauthenticated initialize → 401 with a Bearer challenge.
  const initialize = await checkUnauthenticatedInitialize(mcpUrl, probeOptions)
  results.push(initialize.result)
  if (initialize.response === undefined) {
    // No HTTP answer at all (refused, DNS, TLS, timeout): every other request would fail the same way.
    initialize.result.detail += '; nothing else was checked'
    return report()
  }
  let headerPrmUrl: string | undefined
  if (initialize.response?.status === 401) {
    const challenge = checkChallenge(initialize.response, mcpUrl)
    results.push(challenge.result)
    headerPrmUrl = challenge.resourceMetadataUrl
  }

  // 3. PRM, in the order clients try: the header's URL, path-suffixed, root.
  const pathPrmUrl = wellKnownUrl(mcpUrl, 'oauth-protected-resource')
  const rootPrmUrl = `${mcpUrl.origin}/.well-known/oauth-protected-resource`
  const locations: Array<{ name: string, url: string, label: string }> = []
  if (headerPrmUrl !== undefined && headerPrmUrl !== pathPrmUrl && headerPrmUrl !== rootPrmUrl) {
    locations.push({ name: 'prm-header', url: headerPrmUrl, label: 'from WWW-Authenticate' })
  }
  const also = (u: string): string => headerPrmUrl === u ? ', also the one WWW-Authenticate names' : ''
  locations.push({ name: 'prm-path', url: pathPrmUrl, label: `path-suffixed${also(pathPrmUrl)}` })
  if (rootPrmUrl !== pathPrmUrl) locations.push({ name: 'prm-root', url: rootPrmUrl, label: `root${also(rootPrmUrl)}` })
  let prm: ProtectedResourceMetadata | undefined
  for (const location of locations) {
    const checked = await checkProtectedResourceMetadata(location.name, location.url, location.label, mcpUrl, probeOptions)
    results.push(checked.result)
    prm ??= checked.prm
  }

  // 4. AS metadata for the issuer the PRM names (or, with no PRM, the MCP origin).
  const viaFallback = prm === undefined
  const issuer = prm?.authorization_servers[0] ?? mcpUrl.origin
  const as = await checkAsMetadata(issuer, viaFallback, mcpUrl, probeOptions)
  results.push(as.result)
  const metadata = as.metadata
  if (metadata !== undefined) {
    results.push(checkIssuer(issuer, metadata, viaFallback))
    results.push(checkPkce(metadata))
    results.push(checkResponseTypes(metadata))
    results.push(checkEndpoints(metadata))
    results.push(checkPublicClients(metadata))
    results.push(checkIssParameter(metadata))
    results.push(await checkOidcAlias(issuer, probeOptions))
  }

  // 5 and 6. The endpoints answer without redirects; optionally a real registration.
  const endpoint = (key: string): string | undefined => {
    const value = metadata?.[key]
    if (typeof value !== 'string') return undefined
    try { return new URL(value).href } catch { return undefined }
  }
  const authorizationEndpoint = endpoint('authorization_endpoint')
  const tokenEndpoint = endpoint('token_endpoint')
  const registrationEndpoint = endpoint('registration_endpoint')
  if (authorizationEndpoint !== undefined) results.push(await checkAuthorizationEndpoint(authorizationEndpoint, probeOptions))
  if (tokenEndpoint !== undefined) results.push(await checkTokenEndpoint(tokenEndpoint, probeOptions))
  if (registrationEndpoint !== undefined) {
    results.push(options.register === true
      ? await checkRegistration(registrationEndpoint, probeOptions)
      : await checkRegistrationEndpoint(registrationEndpoint, probeOptions))
  }

  // 7. CORS for browser clients.
  const inspector = { origin: INSPECTOR_ORIGIN, method: 'GET', headers: ['mcp-protocol-version'] }
  results.push(await checkPreflight('cors-prm', 'the protected resource metadata', pathPrmUrl, inspector, probeOptions))
  if (metadata !== undefined) {
    results.push(await checkPreflight('cors-as-metadata', 'the authorization server metadata', as.url, inspector, probeOptions))
  }
  if (tokenEndpoint !== undefined) {
    results.push(await checkPreflight('cors-token', 'the token endpoint', tokenEndpoint, { ...inspector, method: 'POST' }, probeOptions))
  }
  results.push(await checkPreflight('cors-mcp-preflight', '/mcp', mcpUrl.href,
    { origin: CLAUDE_ORIGIN, method: 'POST', headers: ['authorization', 'content-type', 'mcp-protocol-version'] }, probeOptions))
  results.push(checkExposeHeaders(initialize.response, initialize.sentOrigin))

  // 8. The 2025-03-26 fallback.
  results.push(await checkFallbackAuthorize(mcpUrl, probeOptions))

  // 9. This installation: the database driver a server started from it would load.
  results.push(checkPostgresDriver())

  // 10. External identity providers (IDP_FILE), fetched from this host as the server would.
  if (options.identityProviders !== undefined) {
    // Loaded only here: jose is not needed by the other checks or the other CLI commands.
    const { checkIdentityProviders } = await import('./checks/identity-providers.ts')
    results.push(...await checkIdentityProviders(options.identityProviders, probeOptions.timeoutMs))
  }

  return report()
}

const LABEL = { pass: 'PASS', fail: 'FAIL', warn: 'WARN', info: 'INFO' } as const

/** One line per check ("FAIL  name: problem → fix: …"), then a summary. */
export function formatReport (report: DoctorReport): string {
  const oneLine = (s: string): string => s.replace(/\s*\n\s*/g, ' ')
  const lines = report.results.map((r) => oneLine(`${LABEL[r.status]}  ${r.name}: ${r.detail}${r.fix !== null && r.status !== 'pass' ? ` → fix: ${r.fix}` : ''}`))
  const count = (status: CheckResult['status']): number => report.results.filter((r) => r.status === status).length
  const failed = count('fail')
  const summary = [`${count('pass')} passed`, `${failed} failed`, `${count('warn')} warning(s)`, `${count('info')} info`].join(', ')
  lines.push('')
  // The installation's own check (postgres-driver) says nothing about what claude.ai sees.
  const deploymentFailed = report.results.some((r) => r.status === 'fail' && r.name !== 'postgres-driver')
  lines.push(failed === 0
    ? `${summary}: discovery works the way claude.ai does it${count('warn') > 0 ? ' (see the warnings for a public deployment)' : ''}.`
    : deploymentFailed
      ? `${summary}: claude.ai would not connect; fix the FAIL lines from the top (later ones often follow from earlier ones).`
      : `${summary}: discovery works the way claude.ai does it, but a server started from this installation would not start on PostgreSQL (see postgres-driver).`)
  return lines.join('\n')
}
