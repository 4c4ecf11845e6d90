'use strict'
// SAP Event Mesh multitenancy, as @sap/cds does it for its Event Mesh kinds: with `cds.requires.multitenancy`
// and `cds.xt.DeploymentService` (from @sap/cds-mtxs) served,
//
// - after a tenant's `subscribe`: the tenant's queue (the service's queue name) and its topic subscriptions are
//   created with a token of the tenant (`req.data.metadata.subscribedSubdomain` replaces the first host label of
//   the management token URL), after the management API's readiness check; for the REST kinds with a webhook, the
//   tenant's webhook is registered too (the provider's registration body, its token URL the tenant's);
// - before a tenant's `unsubscribe`: the tenant's subdomain is looked up (the unsubscribe's metadata, else
//   `cds.xt.SaasProvisioningService`'s `tenant` as a privileged user; a 404 means there is nothing to delete),
//   then the tenant's webhook (if any) and its queue — and with it its subscriptions — are deleted;
// - `cds.xt.SaasProvisioningService`'s `dependencies` get `{ xsappname }` of the binding, so the SaaS registry
//   subscribes the tenant to Event Mesh too;
// - `POST /messaging/enterprise-messaging/deploy` (scope `emmanagement`) deploys the queues (and webhooks) of the
//   listed tenants again (see deployEndpoint).
//
// Errors of the hooks are logged with their code and what to check (as @sap/cds, they do not fail the
// subscription). All HTTP runs in the native engine (`eventMeshTenantDeploy`, `eventMeshTenantUndeploy`).
const { cds } = require('./cds')
const { native } = require('./native')
const { settled } = require('./errors')
const { readBody } = require('./event-mesh-webhook')

const DS = 'cds.xt.DeploymentService'
const SPS = 'cds.xt.SaasProvisioningService'
const DEPLOY_PATH = '/messaging/enterprise-messaging/deploy'

/** The Event Mesh services with tenant hooks: `{ srv, current }` (current() gives the service's spec). */
const registered = []
let deployMounted = null // the express app the deploy endpoint is mounted on

/**
 * Whether the provider gets its own queue (subscriptions, webhook) at startup: not with multitenancy and
 * `deployForProvider: false`, as in @sap/cds (without multitenancy the option does not apply).
 */
function deployForProvider(options) {
  const off = options?.deployForProvider === false || options?.deployForProvider === 'false'
  return !(off && cds.env.requires?.multitenancy)
}

/** The native options of one tenant's queue: `spec` (eventMesh, queue, webhook) with the tenant's subdomain on the OAuth clients. */
function tenantOptions(spec, subdomain, topics) {
  const em = spec.eventMesh
  const webhook = spec.webhook && { ...spec.webhook, oauth: { ...spec.webhook.oauth, subdomain } }
  return {
    eventMesh: { ...em, managementOauth: { ...em.managementOauth, subdomain } },
    queue: spec.queue,
    topics,
    webhook
  }
}

/** Creates a tenant's queue and subscriptions (readiness check first) and registers its webhook (if any), with the tenant's tokens. */
function deployTenant(spec, subdomain, topics) {
  return settled(native().eventMeshTenantDeploy(tenantOptions(spec, subdomain, topics)))
}

/** Deletes a tenant's webhook (if any) and queue (with its subscriptions): `{ queue, webhook }`, each `false` when it did not exist. */
function undeployTenant(spec, subdomain) {
  return settled(native().eventMeshTenantUndeploy(tenantOptions(spec, subdomain, [])))
}

const isNotFound = e => e?.status === 404 || e?.statusCode === 404 || e?.code === 404 || e?.code === '404'

/** `cds.xt.SaasProvisioningService`'s `tenant` (one, or all without `tenant`) as a privileged user; a 404 is `[]`. */
async function readTenants(tenant) {
  const sps = cds.services[SPS]
  if (!sps) return []
  try {
    const user = new cds.User.Privileged()
    const info = await sps.tx({ user, tenant: cds.context?.tenant }, tx => (tenant === undefined ? tx.read('tenant') : tx.read('tenant', { subscribedTenantId: tenant })))
    return [].concat(info ?? [])
  } catch (e) {
    if (isNotFound(e)) return []
    throw e
  }
}

/** The subscriber subdomain of `tenant` from `cds.xt.SaasProvisioningService` (undefined when it is not known: 404). */
async function subdomainOf(tenant) {
  return (await readTenants(tenant))[0]?.subscribedSubdomain
}

/** Deploys the queue (and webhook) of one service for one tenant and logs what it did; `wipe` deletes them first. */
async function deployOne({ srv, current }, tenant, subdomain, { wipe = false } = {}) {
  const s = current()
  if (wipe) {
    const gone = await undeployTenant(s, subdomain)
    srv.LOG.info(`${srv.name}: wipeData: Event Mesh queue '${s.queue}' of tenant '${tenant}' ${gone.queue ? 'deleted' : 'was not there'}`)
  }
  const r = await deployTenant(s, subdomain, [...srv.subscribedTopics.keys()])
  srv.LOG.info(
    `${srv.name}: Event Mesh queue '${s.queue}' of tenant '${tenant}' ${r.created ? 'created' : 'exists'}` +
      (r.added.length ? `; subscriptions created: ${r.added.join(', ')}` : '') +
      (r.webhook ? '; webhook registered' : '')
  )
  return r
}

/**
 * `POST /messaging/enterprise-messaging/deploy` with `{ tenants: [...] | ['all'], queues?, wipeData? }`: (re)deploys the
 * queue, subscriptions and webhook (REST kinds) of every registered Event Mesh service — or only those whose queue
 * is in `queues` — for the listed tenants ('all': every tenant `cds.xt.SaasProvisioningService` knows), with each
 * tenant's subdomain token. `wipeData: true` deletes the tenant's queue (its messages and subscriptions) and webhook
 * first. Answers `{ status, body }`: 201 when everything worked, 500 with `[{ queue, succeeded, failed }]` otherwise,
 * 400 for a malformed body.
 */
async function deployRequest(body) {
  const bad = message => ({ status: 400, body: { error: { message } } })
  const list = v => Array.isArray(v) && v.every(x => typeof x === 'string' && x)
  if (!body || typeof body !== 'object' || !list(body.tenants) || !body.tenants.length) return bad("the body needs tenants: a list of tenant ids, or ['all']")
  if (body.queues !== undefined && !list(body.queues)) return bad('queues must be a list of queue names')
  if (body.wipeData !== undefined && typeof body.wipeData !== 'boolean') return bad('wipeData must be true or false')
  const services = body.queues ? registered.filter(e => body.queues.includes(e.current().queue)) : registered
  const unknown = (body.queues || []).filter(q => !registered.some(e => e.current().queue === q))
  if (unknown.length) return bad(`no Event Mesh service of this app has the queue(s) ${unknown.join(', ')}`)
  // One read of every subscribed tenant gives the subdomains of the listed ones as well as 'all'.
  const known = await readTenants()
  const subdomains = new Map(known.map(t => [t.subscribedTenantId, t.subscribedSubdomain]))
  const tenants = body.tenants.includes('all') ? [...subdomains.keys()] : body.tenants
  const results = []
  for (const entry of services) {
    const result = { queue: entry.current().queue, succeeded: [], failed: [] }
    for (const tenant of tenants) {
      const subdomain = subdomains.get(tenant)
      try {
        if (!subdomain) throw new Error(`tenant '${tenant}' is not known to ${SPS} (or has no subscribedSubdomain)`)
        await deployOne(entry, tenant, subdomain, { wipe: body.wipeData === true })
        result.succeeded.push(tenant)
      } catch (e) {
        entry.srv.LOG.error(`${entry.srv.name}: ${e.code || 'ERROR'}: deploying the Event Mesh queue of tenant '${tenant}' failed: ${e.message}`)
        result.failed.push(tenant)
      }
    }
    results.push(result)
  }
  return { status: results.every(r => !r.failed.length) ? 201 : 500, body: results }
}

/** Mounts the deploy endpoint on `cds.app` once: CAP's auth, 401 for anonymous callers, 403 without the scope `emmanagement`. */
function mountDeployEndpoint(LOG) {
  const app = cds.app
  if (!app || typeof app.post !== 'function' || deployMounted === app) return
  deployMounted = app
  app.use(DEPLOY_PATH, cds.middlewares.context(), cds.middlewares.auth())
  app.post(DEPLOY_PATH, async (req, res) => {
    const user = cds.context?.user
    if (!user || user._is_anonymous) return res.sendStatus(401)
    if (!user.is('emmanagement')) return res.sendStatus(403)
    try {
      let body = await readBody(req)
      if (typeof body === 'string') body = body ? JSON.parse(body) : undefined
      const r = await deployRequest(body)
      res.status(r.status).json(r.body)
    } catch (e) {
      if (e instanceof SyntaxError) return res.status(400).json({ error: { message: `the body is not JSON: ${e.message}` } })
      LOG.error(`${DEPLOY_PATH}: ${e.code || 'ERROR'}: ${e.message}`)
      res.status(500).json({ error: { message: e.message } })
    }
  })
}

/**
 * Registers the tenant hooks of the Event Mesh service `srv` on `cds.xt.DeploymentService` (now when it is served,
 * else once every service is served) and the deploy endpoint. `spec()` gives `{ eventMesh, queue, xsappname,
 * webhook? }`: the management API client options (`managementUri`, `managementOauth: { oa2, uaa, source }`,
 * `managementBasePath`, `queueConfig`), the queue, the binding's `xsappname` and, for a REST kind with a webhook,
 * `{ uri, oauth, registration }` (the httprest entry and the provider's registration body). The topics are the
 * service's subscriptions at the time of the deployment. Does nothing without `cds.requires.multitenancy`.
 */
function registerTenantHooks(srv, spec) {
  if (!cds.env.requires?.multitenancy) return
  let done = false
  // The kind's options for a tenant's queue; without a management entry in the binding there is nothing to do.
  const current = () => {
    const s = spec()
    if (!s) throw Object.assign(new Error('the Event Mesh binding has no management entry (credentials.management[0].uri and oa2)'), { code: 'INVALID_CONFIG' })
    return s
  }
  const entry = { srv, current }
  // (a service of the same name served again, e.g. by another cds.test in this process, replaces the old one)
  const i = registered.findIndex(e => e.srv.name === srv.name)
  if (i >= 0) registered.splice(i, 1, entry)
  else registered.push(entry)
  const attach = () => {
    mountDeployEndpoint(srv.LOG)
    const ds = cds.services[DS]
    if (done || !ds) return
    done = true
    ds.after('subscribe', async (_, req) => {
      const tenant = req.data?.tenant
      const subdomain = req.data?.metadata?.subscribedSubdomain
      if (!subdomain) {
        srv.LOG.error(`${srv.name}: tenant '${tenant}' was subscribed without metadata.subscribedSubdomain; its Event Mesh queue is not created (the SaaS registry's subscription payload carries it)`)
        return
      }
      try {
        await deployOne(entry, tenant, subdomain)
      } catch (e) {
        srv.LOG.error(
          `${srv.name}: ${e.code || 'ERROR'}: cannot create the Event Mesh queue of tenant '${tenant}' (subdomain '${subdomain}'): ${e.message}; check the binding's management credentials and that the tenant is subscribed to Event Mesh, then subscribe the tenant again or POST ${DEPLOY_PATH}`
        )
      }
    })
    ds.before('unsubscribe', async req => {
      const tenant = req.data?.tenant
      try {
        const subdomain = req.data?.options?.metadata?.subscribedSubdomain ?? (await subdomainOf(tenant))
        if (!subdomain) {
          srv.LOG.info(`${srv.name}: tenant '${tenant}' is not known to ${SPS}; no Event Mesh queue to delete`)
          return
        }
        const s = current()
        const deleted = await undeployTenant(s, subdomain)
        srv.LOG.info(`${srv.name}: Event Mesh queue '${s.queue}' of tenant '${tenant}' ${deleted.queue ? 'deleted' : 'was not there'}` + (s.webhook ? `; webhook ${deleted.webhook ? 'deleted' : 'was not there'}` : ''))
      } catch (e) {
        srv.LOG.error(`${srv.name}: ${e.code || 'ERROR'}: cannot delete the Event Mesh queue of tenant '${tenant}': ${e.message}; delete it in the Event Mesh cockpit of the tenant's subaccount`)
      }
    })
    const sps = cds.services[SPS]
    const xsappname = spec()?.xsappname
    if (sps && xsappname)
      sps.prepend(() =>
        sps.on('dependencies', async (_, next) => {
          const deps = (await next()) || []
          return deps.some(d => d?.xsappname === xsappname) ? deps : [...deps, { xsappname }]
        })
      )
  }
  attach()
  if (!done) cds.once('served', attach)
}

module.exports = { registerTenantHooks, deployTenant, undeployTenant, deployForProvider, DEPLOY_PATH }
