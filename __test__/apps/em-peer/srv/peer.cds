service PeerService {
  function ping() returns String;
}
