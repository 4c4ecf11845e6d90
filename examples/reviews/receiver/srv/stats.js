const cds = require('@sap/cds')

// Receives review events from the native file box and keeps a running average per subject.
module.exports = class ReviewStatsService extends cds.ApplicationService {
  async init() {
    const stats = new Map()
    const messaging = await cds.connect.to('messaging')
    messaging.on('sap.capire.reviews.reviewed', msg => {
      const { subject, reviewer, rating } = msg.data
      const s = stats.get(subject) || { count: 0, sum: 0 }
      s.count++
      s.sum += rating
      stats.set(subject, s)
      console.log(`received ${reviewer} on ${subject}: ${rating} (average ${(s.sum / s.count).toFixed(2)} of ${s.count})`)
    })
    this.on('summary', () =>
      [...stats].map(([subject, s]) => `${subject}: ${(s.sum / s.count).toFixed(2)} (${s.count})`).join('; ')
    )
    return super.init()
  }
}
