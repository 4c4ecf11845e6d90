service ReviewStatsService {
  function summary() returns String;
}
