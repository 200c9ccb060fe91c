/**
 * The checks of `bus-mcp doctor`, one function each, in the order claude.ai's connector backend
 * walks a server (client-interop.md §2, §4): unauthenticated initialize → 401 challenge →
 * protected resource metadata → authorization server metadata → endpoints → registration, then
 * CORS, the 2025-03-26 fallback and this installation. Each returns a CheckResult naming the
 * problem and its fix; some also return what they found, which the next checks need. None
 * follows a redirect or prints a secret. Every HTTP answer goes through one chain
 * (checks/answer.ts: no answer / redirect / missing / wrong status / not JSON); each file under
 * checks/ words its outcomes for one concern.
 */
export { info, pass, fail, warn, type CheckResult, type CheckStatus } from './result.ts'
export { classifyAnswer, type Answer } from './checks/answer.ts'
export { CLAUDE_DCR_BODY, CLAUDE_ORIGIN, INSPECTOR_ORIGIN, wellKnownUrl } from './checks/common.ts'
export { checkUrl, type UrlCheck } from './checks/url.ts'
export { checkChallenge, checkUnauthenticatedInitialize, type ChallengeCheck, type InitializeCheck } from './checks/mcp.ts'
export { checkProtectedResourceMetadata, type PrmCheck, type ProtectedResourceMetadata } from './checks/prm.ts'
export {
  checkAsMetadata, checkEndpoints, checkIssParameter, checkIssuer, checkOidcAlias, checkPkce, checkPublicClients,
  checkResponseTypes, fetchMetadataDocument, type AsMetadata, type AsMetadataCheck
} from './checks/as-metadata.ts'
export { checkAuthorizationEndpoint, checkFallbackAuthorize, checkRegistration, checkRegistrationEndpoint, checkTokenEndpoint } from './checks/endpoints.ts'
export { checkExposeHeaders, checkPreflight, type PreflightRequest } from './checks/cors.ts'
export { checkPostgresDriver } from './checks/installation.ts'
