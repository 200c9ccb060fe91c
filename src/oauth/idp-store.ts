import { and, eq, gt, isNull, sql } from 'drizzle-orm'
import type { Executor } from '../db/client.ts'
import { oauthIdpLogins } from '../db/schema.ts'
import { hashSecret } from '../lib/secrets.ts'

/**
 * The `oauth_idp_logins` table: one row per sign-in started from a consent page. Only hashes of
 * the state and of the browser cookie are kept; the nonce and PKCE verifier are needed as they
 * are at the callback (neither is of use without the provider's code and our client secret).
 */

export type IdpLoginRow = typeof oauthIdpLogins.$inferSelect

export interface NewIdpLogin {
  state: string
  browserSecret: string
  pendingAuthorizationId: number
  provider: string
  nonce: string
  codeVerifier: string
  expiresAt: Date
}

export async function createIdpLogin (db: Executor, login: NewIdpLogin): Promise<void> {
  await db.insert(oauthIdpLogins).values({
    stateHash: hashSecret(login.state),
    browserHash: hashSecret(login.browserSecret),
    pendingAuthorizationId: login.pendingAuthorizationId,
    provider: login.provider,
    nonce: login.nonce,
    codeVerifier: login.codeVerifier,
    expiresAt: login.expiresAt
  })
}

export type ConsumeResult =
  | { ok: true, login: IdpLoginRow }
  | { ok: false, reason: 'unknown' | 'used' | 'expired' | 'other_browser' }

/**
 * Spends the sign-in named by `state` for `provider`, only from the browser holding its cookie:
 * one UPDATE … RETURNING, so of two callbacks with the same state (a replay, a double load) one
 * wins. When nothing was spent, says why (for the page).
 */
export async function consumeIdpLogin (db: Executor, provider: string, state: string, browserSecret: string | undefined): Promise<ConsumeResult> {
  if (state.length > 200) return { ok: false, reason: 'unknown' }
  const stateHash = hashSecret(state)
  if (browserSecret !== undefined && browserSecret.length <= 200) {
    const [login] = await db.update(oauthIdpLogins).set({ consumedAt: sql`now()` }).where(and(
      eq(oauthIdpLogins.stateHash, stateHash),
      eq(oauthIdpLogins.provider, provider),
      eq(oauthIdpLogins.browserHash, hashSecret(browserSecret)),
      isNull(oauthIdpLogins.consumedAt),
      gt(oauthIdpLogins.expiresAt, sql`now()`)
    )).returning()
    if (login !== undefined) return { ok: true, login }
  }
  const [row] = await db.select({ consumedAt: oauthIdpLogins.consumedAt, expiresAt: oauthIdpLogins.expiresAt })
    .from(oauthIdpLogins).where(and(eq(oauthIdpLogins.stateHash, stateHash), eq(oauthIdpLogins.provider, provider)))
  if (row === undefined) return { ok: false, reason: 'unknown' }
  if (row.consumedAt !== null) return { ok: false, reason: 'used' }
  if (row.expiresAt.getTime() <= Date.now()) return { ok: false, reason: 'expired' }
  return { ok: false, reason: 'other_browser' }
}
