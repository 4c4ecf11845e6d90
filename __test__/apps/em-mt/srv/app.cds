using em.mt from '../db/schema';
service AppService {
  entity Notes as projection on mt.Notes;
}
