import * as oauth from 'oauth4webapi'
import t from 'tap'
import { pkcePair, visitAuthorization } from '../helpers/oauth.ts'
import { principalWithToken, rpc, startTestServer } from '../helpers/server.ts'

// oauth4webapi refuses plain http unless told: the test server runs on loopback http.
const insecure = { [oauth.allowInsecureRequests]: true }

for (const method of ['none', 'client_secret_post', 'client_secret_basic'] as const) {
  t.test(`oauth4webapi (${method}): discovery, registration, code + PKCE, refresh, revocation`, async (t) => {
    const server = await startTestServer(t, { listen: true, env: { AUTO_APPROVE_PRINCIPAL: 'agent' } })
    await principalWithToken(server, 'agent')
    const issuer = new URL(server.config.publicUrl)

    const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
    t.equal(as.issuer, server.config.publicUrl)
    t.same(as.code_challenge_methods_supported, ['S256'])
    t.equal(as.authorization_response_iss_parameter_supported, true)

    const redirectUri = 'http://127.0.0.1:8976/callback'
    const registered = await oauth.processDynamicClientRegistrationResponse(await oauth.dynamicClientRegistrationRequest(as, {
      redirect_uris: [redirectUri], token_endpoint_auth_method: method, client_name: 'strict', grant_types: ['authorization_code', 'refresh_token']
    }, insecure))
    t.equal(registered.token_endpoint_auth_method, method, 'the issued method is echoed')
    const client: oauth.Client = { client_id: registered.client_id, token_endpoint_auth_method: method }
    const secret = registered.client_secret as string | undefined
    t.equal(secret === undefined, method === 'none', 'a secret exactly for confidential methods')
    const clientAuth = method === 'none' ? oauth.None() : method === 'client_secret_post' ? oauth.ClientSecretPost(secret as string) : oauth.ClientSecretBasic(secret as string)

    const { verifier, challenge } = pkcePair()
    const state = oauth.generateRandomState()
    const authorizationUrl = new URL(as.authorization_endpoint as string)
    authorizationUrl.search = new URLSearchParams({
      client_id: client.client_id,
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: 'bus:read bus:write',
      code_challenge: challenge,
      code_challenge_method: 'S256',
      state,
      resource: server.config.resourceUrl
    }).toString()
    const visit = await visitAuthorization(authorizationUrl)
    const params = oauth.validateAuthResponse(as, client, visit.location as URL, state)

    const tokens = await oauth.processAuthorizationCodeResponse(as, client,
      await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, redirectUri, verifier, { ...insecure, additionalParameters: { resource: server.config.resourceUrl } }))
    t.equal(tokens.token_type, 'bearer')
    t.equal(tokens.scope, 'bus:read bus:write')
    t.ok(tokens.refresh_token)
    let who = await rpc(server, tokens.access_token, 'tools/call', { name: 'whoami', arguments: {} })
    t.equal(who.body.result.structuredContent.auth, 'oauth')

    const refreshed = await oauth.processRefreshTokenResponse(as, client,
      await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token as string, insecure))
    t.not(refreshed.refresh_token, tokens.refresh_token, 'rotated')
    who = await rpc(server, refreshed.access_token, 'tools/call', { name: 'whoami', arguments: {} })
    t.equal(who.status, 200)

    await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, clientAuth, refreshed.refresh_token as string, insecure))
    who = await rpc(server, refreshed.access_token, 'tools/call', { name: 'whoami', arguments: {} })
    t.equal(who.status, 401, 'revoking the refresh token revokes the grant and its access tokens')
    t.match(who.headers['www-authenticate'], /error="invalid_token"/)
    const reuse = await oauth.refreshTokenGrantRequest(as, client, clientAuth, refreshed.refresh_token as string, insecure)
    t.equal(reuse.status, 400)
    t.equal((await reuse.json() as { error: string }).error, 'invalid_grant')
  })
}
