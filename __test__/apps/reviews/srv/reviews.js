const cds = require('@sap/cds')
module.exports = class ReviewsService extends cds.ApplicationService {
  init() {
    this.on('review', async req => {
      await this.emit('reviewed', { subject: req.data.subject, rating: req.data.rating })
      return 'ok'
    })
    return super.init()
  }
}
