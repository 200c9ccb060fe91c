import { mkdtempSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'

/** The provider id, audience and subject the bench's external tokens carry. */
export const BENCH_PROVIDER = 'bench-idp'
export const BENCH_AUDIENCE = 'bench-bus'
export const BENCH_SUBJECT = 'bench-agent'

export interface BenchIssuer {
  /** An IDP_FILE naming this issuer, for the replicas' environment. */
  idpFile: string
  /** A signed RS256 access token (typ at+jwt) for principal "bench", valid two hours. */
  token: () => Promise<string>
  close: () => Promise<void>
}

/**
 * An identity provider as the replicas see one: a key set served on loopback and JWT access
 * tokens signed with its key, the shape Entra ID or Keycloak issue. It runs in the bench
 * process; the replicas fetch the keys once at start, so it is off the measured path.
 */
export async function startBenchIssuer (): Promise<BenchIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('RS256')
  const kid = 'bench-key'
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' }] })
  const server = createServer((request, response) => {
    if (request.url === '/jwks') {
      response.writeHead(200, { 'content-type': 'application/json' }).end(jwks)
    } else {
      response.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve) => { server.listen(0, '127.0.0.1', () => { resolve() }) })
  // It must not keep the bench process alive when the run ends.
  server.unref()
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const idpFile = join(mkdtempSync(join(tmpdir(), 'bus-bench-idp-')), 'idp.json')
  writeFileSync(idpFile, JSON.stringify({ providers: [{ id: BENCH_PROVIDER, issuer, jwks_uri: `${issuer}/jwks`, audiences: [BENCH_AUDIENCE], algorithms: ['RS256'] }] }))
  return {
    idpFile,
    token: async () => await new SignJWT({ scope: 'bus:read bus:write', client_id: 'bench-client' })
      .setProtectedHeader({ alg: 'RS256', kid, typ: 'at+jwt' })
      .setIssuer(issuer)
      .setAudience(BENCH_AUDIENCE)
      .setSubject(BENCH_SUBJECT)
      .setIssuedAt()
      .setExpirationTime('2h')
      .sign(privateKey),
    close: async () => { await new Promise<void>((resolve) => { server.close(() => { resolve() }) }) }
  }
}
