// Test-only OpenID Provider for Wardgate's integration tests.
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// This wraps panva's certified `oidc-provider` (pinned in package.json) so the Rust tests talk to a
// real, standards-conformant OP instead of a hand-rolled fake. Everything protocol-related (the
// authorization/token/end-session endpoints, ID token and logout token minting, back-channel
// logout delivery, PKCE, session cookies) is the library's job. This file only adds what a
// library cannot know:
//   * fixed in-memory accounts and a tiny HTML login form (devInteractions is disabled),
//   * auto-consent for the first-party clients listed in CONFIG,
//   * fault-injection hooks under /test/ that rewrite the NEXT token response's ID token, because
//     a certified OP never mints a bad token and the relying party's rejection paths still need
//     to be exercised.
//
// CONFIG.json:
//   {
//     "port": 12345,                          // listens on 127.0.0.1:port (HTTPS)
//     "issuer": "https://localhost:12345",    // issuer identifier, used verbatim
//     "cert": "/path/cert.pem",               // PEM certificate chain for the HTTPS listener
//     "key": "/path/key.pem",                 // PEM private key for the HTTPS listener
//     "keys": "/path/jwks.json",              // optional: reuse signing keys from this file if it
//                                             // exists, otherwise generate and write them there
//     "clients": [{
//       "client_id": "wardgate",
//       "client_secret": "...",
//       "redirect_uris": ["https://127.0.0.1:4443/.wardgate/oidc/callback"],
//       "post_logout_redirect_uris": ["https://127.0.0.1:4443/.wardgate/login"],  // optional
//       "backchannel_logout_uri": "https://127.0.0.1:4443/.wardgate/oidc/backchannel-logout" // optional
//       // any other client metadata given here is passed through to oidc-provider unchanged
//     }]
//   }
//
// stdout carries exactly one line, `oidc-provider ready ISSUER`, once the listener is up. All
// diagnostics go to stderr. SIGTERM/SIGINT close the listener and exit 0.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as https from 'node:https';

import * as jose from 'jose';
import Provider from 'oidc-provider';

// oidc-provider prints its "NOTICE" lines with console.info, i.e. to stdout. The Rust harness
// reads stdout for the single ready line, so route every library notice to stderr instead.
console.info = (...args) => console.error(...args);

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

function fail(message) {
  console.error(`oidc-provider: ${message}`);
  process.exit(2);
}

if (process.argv.length !== 3) fail('usage: node provider.mjs CONFIG.json');

let config;
try {
  config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
} catch (err) {
  fail(`cannot read config ${process.argv[2]}: ${err.message}`);
}
for (const field of ['port', 'issuer', 'cert', 'key', 'clients']) {
  if (config[field] === undefined) fail(`config is missing "${field}"`);
}
if (!Array.isArray(config.clients) || config.clients.length === 0) {
  fail('config "clients" must be a non-empty array');
}

const ISSUER = config.issuer;

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

// A fresh RS256 key with a random kid at every start, so restarting the process is a key rotation
// at the provider (the relying party must refetch the JWKS). With "keys" in CONFIG the key set is
// persisted instead, so a restart can also keep the old key.
async function loadOrCreateJwks(path) {
  if (path && fs.existsSync(path)) {
    return JSON.parse(fs.readFileSync(path, 'utf8'));
  }
  const { privateKey } = await jose.generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await jose.exportJWK(privateKey);
  jwk.kid = crypto.randomBytes(12).toString('base64url');
  jwk.alg = 'RS256';
  jwk.use = 'sig';
  const jwks = { keys: [jwk] };
  if (path) fs.writeFileSync(path, `${JSON.stringify(jwks)}\n`, { mode: 0o600 });
  return jwks;
}

const jwks = await loadOrCreateJwks(config.keys);
// oidc-provider signs with the first key usable for RS256; the fault-injection hook re-signs
// rewritten ID tokens with the very same private key and kid, so only the intended defect differs.
const signingJwk = jwks.keys.find((k) => k.kty === 'RSA' && (!k.alg || k.alg === 'RS256'));
if (!signingJwk) fail('key set has no RSA key usable for RS256');
const signingKey = await jose.importJWK(signingJwk, 'RS256');

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

// `sub` is deliberately opaque and different from the username, so the relying party cannot get
// away with treating one as the other.
const ACCOUNTS = [
  {
    sub: 'sub-drsmith',
    username: 'drsmith',
    password: 'idp-pass-1',
    amr: ['pwd', 'mfa'],
    acr: 'urn:test:mfa',
    claims: {
      preferred_username: 'drsmith',
      name: 'Dr Smith',
      email: 'drsmith@clinic.test',
      email_verified: true,
      wardgate_roles: ['clinician'],
      groups: ['cardiology'],
    },
  },
  {
    sub: 'sub-nurse',
    username: 'nurse',
    password: 'idp-pass-2',
    amr: ['pwd'],
    acr: 'urn:test:pwd',
    claims: {
      preferred_username: 'nurse',
      name: 'Nurse Joy',
      wardgate_roles: ['nurse'],
      groups: ['ward-3'],
    },
  },
];

function sameSecret(a, b) {
  const x = crypto.createHash('sha256').update(String(a)).digest();
  const y = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(x, y);
}

function checkCredentials(username, password) {
  const account = ACCOUNTS.find((a) => a.username === username);
  return account && sameSecret(account.password, password) ? account : undefined;
}

// ---------------------------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------------------------

const clients = config.clients.map((c) => {
  const client = {
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    post_logout_redirect_uris: [],
    ...c,
  };
  if (client.backchannel_logout_uri) {
    // Makes oidc-provider put `sid` into ID tokens and logout tokens for this client.
    client.backchannel_logout_session_required = true;
  }
  return client;
});

function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>`;
}

const provider = new Provider(ISSUER, {
  clients,
  // A copy: oidc-provider takes ownership of what it is given.
  jwks: structuredClone(jwks),

  cookies: {
    // Random per process: cookies from a previous run are simply ignored.
    keys: [crypto.randomBytes(32).toString('base64url'), crypto.randomBytes(32).toString('base64url')],
  },

  // PKCE (S256, the only method oidc-provider v9 supports) for every client, confidential or not.
  pkce: { required: () => true },

  features: {
    devInteractions: { enabled: false }, // our own /interaction pages below
    backchannelLogout: { enabled: true },
    claimsParameter: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // The confirmation page oidc-provider shows at the end_session endpoint when an OP session
      // exists. `form` is oidc-provider's <form id="op.logoutForm"> carrying the xsrf token. We add
      // logout=yes (= end the whole OP session, notifying every client in it over the back
      // channel) and submit it from an inline script, so a browser goes straight through; the
      // visible button serves a client that does not run scripts.
      async logoutSource(ctx, form) {
        const withLogout = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
        ctx.type = 'html';
        ctx.body = page('Sign out', `${withLogout}
<button id="logout-yes" type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<script>document.getElementById('op.logoutForm').submit();</script>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.type = 'html';
        ctx.body = page('Signed out', '<p id="signed-out">signed out at provider</p>');
      },
    },
  },

  // By default oidc-provider moves scope claims out of the ID token when an access token is also
  // issued (they would only be available from userinfo). Wardgate reads them from the ID token.
  conformIdTokenClaims: false,

  acrValues: ['urn:test:mfa', 'urn:test:pwd'],
  claims: {
    // acr/amr/auth_time are listed under `openid` so they land in every ID token. As standalone
    // claims (value null) oidc-provider would include them only when explicitly requested.
    openid: ['sub', 'acr', 'amr', 'auth_time'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    wardgate: ['wardgate_roles', 'groups'],
    acr: null,
    auth_time: null,
    iss: null,
    sid: null,
  },

  async findAccount(ctx, sub) {
    const account = ACCOUNTS.find((a) => a.sub === sub);
    if (!account) return undefined;
    return {
      accountId: account.sub,
      // oidc-provider filters this down to what the granted scopes / claims request allow.
      async claims() {
        return { sub: account.sub, ...account.claims };
      },
    };
  },

  // Skip consent for these first-party clients: the documented recipe, extended to top up an
  // existing grant with whatever the current request asks for, so the consent prompt never fires.
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
    let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
    if (!grant) {
      grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    }
    const scopes = [...ctx.oidc.requestParamOIDCScopes];
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
    const claims = [...ctx.oidc.requestParamClaims];
    if (claims.length) grant.addOIDCClaims(claims);
    await grant.save();
    return grant;
  },

  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    IdToken: 300,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },

  // oidc-provider v9 refuses outgoing requests to special-use addresses (SSRF protection) by
  // handing fetch a guarded dispatcher. Every back-channel logout URI in these tests is on
  // 127.0.0.1, so use the plain global fetch. TLS verification stays on: the test points
  // NODE_EXTRA_CA_CERTS at Wardgate's development certificate.
  fetch(url, options) {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },

  async renderError(ctx, out, error) {
    ctx.type = 'html';
    ctx.body = page('OP error', Object.entries(out)
      .map(([k, v]) => `<p id="${escapeHtml(k)}">${escapeHtml(k)}: ${escapeHtml(v)}</p>`).join('\n'));
    if (error?.status >= 500 || !error?.status) console.error('oidc-provider: render error', error);
  },
});

// Diagnostics (stderr only).
provider.on('server_error', (ctx, err) => console.error('oidc-provider: server_error', err));
for (const event of ['grant.error', 'authorization.error', 'end_session.error', 'end_session_confirm.error']) {
  provider.on(event, (ctx, err) => console.error(`oidc-provider: ${event}: ${err.message} ${err.error_description ?? ''}`));
}

// Back-channel logout outcomes, kept for GET /test/backchannel so a test can tell "the OP tried
// and Wardgate answered non-2xx" from "the OP never tried".
const backchannelLog = [];
provider.on('backchannel.success', (ctx, client, accountId, sid) => {
  backchannelLog.push({ ok: true, client_id: client.clientId, sub: accountId, sid });
  console.error(`oidc-provider: back-channel logout delivered to ${client.backchannelLogoutUri}`);
});
provider.on('backchannel.error', (ctx, err, client, accountId, sid) => {
  backchannelLog.push({ ok: false, client_id: client.clientId, sub: accountId, sid, error: err.message });
  console.error(`oidc-provider: back-channel logout to ${client.backchannelLogoutUri} failed: ${err.message}`, err.cause ?? '');
});

// ---------------------------------------------------------------------------------------------
// Fault injection: rewrite the ID token of the next token response
// ---------------------------------------------------------------------------------------------

const MODES = new Set([
  'normal', 'wrong_nonce', 'wrong_aud', 'expired', 'tampered', 'alg_none', 'wrong_iss', 'future_iat',
  'no_auth_time',
]);
let nextMode = 'normal';

const b64json = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
const jsonb64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

async function rewriteIdToken(idToken, mode) {
  const [h, p, s] = idToken.split('.');
  const header = b64json(h);
  const payload = b64json(p);
  const now = Math.floor(Date.now() / 1000);
  const lifetime = payload.exp - payload.iat;

  switch (mode) {
    case 'tampered': {
      // Change one character in the middle of the signature. (The last character can carry
      // unused padding bits, so changing it might not change the decoded signature.)
      const i = Math.floor(s.length / 2);
      const replacement = s[i] === 'A' ? 'B' : 'A';
      return `${h}.${p}.${s.slice(0, i)}${replacement}${s.slice(i + 1)}`;
    }
    case 'alg_none': {
      // Unsecured JWT: same payload, header alg "none" (no kid), empty signature.
      const { kid, ...rest } = header;
      return `${jsonb64({ ...rest, alg: 'none' })}.${p}.`;
    }
    case 'wrong_nonce':
      payload.nonce = `wrong-${crypto.randomBytes(8).toString('base64url')}`;
      break;
    case 'wrong_aud':
      payload.aud = 'someone-else';
      break;
    case 'wrong_iss':
      payload.iss = 'https://not-the-issuer.invalid';
      break;
    case 'expired':
      // Expired an hour ago; iat keeps the usual lifetime before that.
      payload.exp = now - 3600;
      payload.iat = payload.exp - lifetime;
      break;
    case 'no_auth_time':
      // Optional unless max_age was requested; some providers leave it out.
      delete payload.auth_time;
      break;
    case 'future_iat':
      // Issued an hour from now; exp moves along so the token is not also "expired before issue".
      payload.iat = now + 3600;
      payload.exp = payload.iat + lifetime;
      break;
    default:
      return idToken;
  }
  // Re-sign with the provider's real current key and the original header (alg, kid, typ...), so
  // the signature is valid and the only defect is the claim changed above.
  return new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(signingKey);
}

const TOKEN_PATH = provider.pathFor('token'); // "/token" with the default routes

provider.use(async (ctx, next) => {
  await next();
  if (
    nextMode !== 'normal'
    && ctx.method === 'POST'
    && ctx.path === TOKEN_PATH
    && ctx.status === 200
    && typeof ctx.body?.id_token === 'string'
  ) {
    const mode = nextMode;
    nextMode = 'normal'; // one-shot: only the next successful token response is affected
    ctx.body = { ...ctx.body, id_token: await rewriteIdToken(ctx.body.id_token, mode) };
    console.error(`oidc-provider: token response id_token rewritten (${mode})`);
  }
});

// ---------------------------------------------------------------------------------------------
// Test control endpoints and interaction (login) pages
// ---------------------------------------------------------------------------------------------

async function readBody(ctx, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > limit) ctx.throw(413, 'body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function loginPage(uid, { error, username = '' } = {}) {
  const message = error ? `<p id="error">${escapeHtml(error)}</p>` : '';
  return page('Sign in to the test identity provider', `${message}
<form id="login" method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
  <label for="username">Username</label>
  <input id="username" name="username" type="text" value="${escapeHtml(username)}" autofocus/>
  <label for="password">Password</label>
  <input id="password" name="password" type="password"/>
  <button id="signin" type="submit">Sign in</button>
</form>`);
}

// Anything that is not a login prompt (in practice only consent, e.g. prompt=consent) is granted
// on the spot, so a browser can never get stuck on a page the tests do not know about.
async function finishWithGrant(ctx, details) {
  const { prompt: { details: missing = {} }, params, session } = details;
  let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  if (!grant) grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  ctx.respond = false; // interactionFinished writes the 303 itself
  await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const INTERACTION = /^\/interaction\/([^/]+)$/;
const INTERACTION_LOGIN = /^\/interaction\/([^/]+)\/login$/;

provider.use(async (ctx, next) => {
  // --- test hooks ---
  if (ctx.path === '/test/health' && ctx.method === 'GET') {
    ctx.body = { ok: true, issuer: ISSUER, kid: signingJwk.kid };
    return;
  }
  if (ctx.path === '/test/mode') {
    if (ctx.method === 'GET') {
      ctx.body = { mode: nextMode };
      return;
    }
    if (ctx.method === 'POST') {
      let mode;
      try {
        ({ mode } = JSON.parse(await readBody(ctx)));
      } catch {
        ctx.throw(400, 'expected JSON {"mode": ...}');
      }
      if (!MODES.has(mode)) {
        ctx.status = 400;
        ctx.body = { error: `unknown mode ${JSON.stringify(mode)}`, modes: [...MODES] };
        return;
      }
      nextMode = mode;
      ctx.body = { mode };
      return;
    }
  }
  if (ctx.path === '/test/backchannel' && ctx.method === 'GET') {
    ctx.body = backchannelLog;
    return;
  }

  // --- interaction pages ---
  const show = ctx.method === 'GET' && INTERACTION.exec(ctx.path);
  const submit = ctx.method === 'POST' && INTERACTION_LOGIN.exec(ctx.path);
  if (!show && !submit) return next();

  ctx.set('cache-control', 'no-store');
  let details;
  try {
    details = await provider.interactionDetails(ctx.req, ctx.res);
  } catch (err) {
    // e.g. no/expired interaction cookie: the sign-in attempt has to start over at the RP.
    ctx.status = 400;
    ctx.type = 'html';
    ctx.body = page('Interaction not found', `<p id="error">${escapeHtml(err.error_description ?? err.message)}</p>`);
    return;
  }

  if (details.prompt.name !== 'login') {
    await finishWithGrant(ctx, details);
    return;
  }

  if (show) {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid);
    return;
  }

  const form = new URLSearchParams(await readBody(ctx));
  const account = checkCredentials(form.get('username') ?? '', form.get('password') ?? '');
  if (!account) {
    ctx.status = 401;
    ctx.type = 'html';
    ctx.body = loginPage(details.uid, { error: 'wrong username or password', username: form.get('username') ?? '' });
    return;
  }
  ctx.respond = false; // interactionFinished writes the 303 back to the authorization endpoint
  await provider.interactionFinished(
    ctx.req,
    ctx.res,
    { login: { accountId: account.sub, amr: account.amr, acr: account.acr } },
    { mergeWithLastSubmission: false },
  );
});

// ---------------------------------------------------------------------------------------------
// HTTPS listener
// ---------------------------------------------------------------------------------------------

const server = https.createServer(
  { key: fs.readFileSync(config.key), cert: fs.readFileSync(config.cert) },
  provider.callback(),
);

server.on('error', (err) => fail(`listen failed: ${err.message}`));
server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider ready ${ISSUER}`);
});

function shutdown(signal) {
  console.error(`oidc-provider: ${signal}, shutting down`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
